"""The safe format trusts nothing its files claim: crafted policy.json / safetensors files are one
ValueError naming the file and the field, before anything they claim is allocated."""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from jmsra_agents import checkpoint as ck
from jmsra_agents import safe_files as sf
from jmsra_agents.training import TrainSpec, default_ppo, train

TINY_SPEC = dict(n_envs=2, bc_steps=0, eval_freq=64, eval_episodes=1, checkpoint_freq=0, compare_episodes=0,
                 progress_bar=False, device="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    ppo = default_ppo(0, n_steps=32, batch_size=64, n_epochs=1, net_arch=(16,))
    result = train(TrainSpec(total_timesteps=64, logdir=str(logdir), run_name="tiny", ppo=ppo, **TINY_SPEC), log=None)
    assert result.exit_code == 0
    return result.run_dir


def _unit(tmp_path: Path, run: Path, info: dict | None = None, tensors: dict | None = None,
          raw_json: bytes | None = None, raw_weights: bytes | None = None) -> Path:
    """A copy of the run's safe files, the policy.json / weights replaced, hashes made consistent."""
    d = tmp_path / "unit"
    d.mkdir(exist_ok=True)
    weights = raw_weights if raw_weights is not None else (
        st_save(tensors) if tensors is not None else (run / "policy.safetensors").read_bytes())
    (d / "policy.safetensors").write_bytes(weights)
    if raw_json is None:
        info = info if info is not None else json.loads((run / "policy.json").read_text())
        if isinstance(info, dict) and isinstance(info.get("files"), dict):
            info["files"]["policy.safetensors"] = hashlib.sha256(weights).hexdigest()
        raw_json = json.dumps(info).encode()
    (d / "policy.json").write_bytes(raw_json)
    return d


def _info(run: Path) -> dict:
    return json.loads((run / "policy.json").read_text())


def _tensors(run: Path) -> dict:
    return dict(st_load((run / "policy.safetensors").read_bytes()))


def test_the_untouched_unit_loads(tmp_path, tiny_run):
    pol = ck.load_trained_policy(_unit(tmp_path, tiny_run))
    assert isinstance(pol.model, ck.SafeActor)


def _set(path: tuple, value):
    def change(info):
        d = info
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return info
    return change


def _delete(path: tuple):
    def change(info):
        d = info
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
        return info
    return change


CRAFTED_JSON = {
    "huge layer": (_set(("architecture", "policy_net", 0, "linear"), [30000, 30000]), "policy_net[0].linear"),
    "huge action_dim": (_set(("architecture", "action_dim"), 10**12), "architecture.action_dim"),
    "huge int beyond float": (_set(("architecture", "obs_dim"), 10**400), "architecture.obs_dim"),
    "string size": (_set(("architecture", "obs_dim"), "20"), "architecture.obs_dim"),
    "bool size": (_set(("architecture", "obs_dim"), True), "architecture.obs_dim"),
    "negative size": (_set(("architecture", "action_net"), [16, -2]), "architecture.action_net[1]"),
    "broken chain": (_set(("architecture", "action_net"), [17, 2]), "architecture.action_net[0]"),
    "unknown activation": (_set(("architecture", "policy_net", 1), {"activation": "os.system"}), "policy_net[1].activation"),
    "layer not a dict": (_set(("architecture", "policy_net", 0), [1, 2]), "policy_net[0]"),
    "architecture a list": (_set(("architecture",), []), "field architecture"),
    "missing architecture": (_delete(("architecture",)), "field architecture"),
    "missing action_low": (_delete(("architecture", "action_low")), "architecture.action_low"),
    "nan action_low": (_set(("architecture", "action_low", 0), float("nan")), "architecture.action_low[0]"),
    "low above high": (_set(("architecture", "action_low", 0), 5.0), "architecture.action_low[0]"),
    "nan mean": (_set(("normalization", "mean", 3), float("nan")), "normalization.mean[3]"),
    "inf mean": (_set(("normalization", "mean", 0), float("inf")), "normalization.mean[0]"),
    "negative variance": (_set(("normalization", "var", 2), -1.0), "normalization.var[2]"),
    "short variance": (lambda i: _set(("normalization", "var"), i["normalization"]["var"][:-1])(i), "normalization.var"),
    "zero epsilon": (_set(("normalization", "epsilon"), 0.0), "normalization.epsilon"),
    "norm_obs string": (_set(("normalization", "norm_obs"), "yes"), "normalization.norm_obs"),
    "negative steps": (_set(("num_timesteps",), -5), "num_timesteps"),
    "float steps": (_set(("num_timesteps",), 1.5), "num_timesteps"),
    "bad digest": (_set(("files", "model.zip"), 7), "files.model.zip"),
    "run env_id int": (_set(("run", "env_id"), 3), "run.env_id"),
    "run config list": (_set(("run", "config"), [1]), "run.config"),
    "run config bad value": (_set(("run", "config", "n_agents"), -3), "run.config"),
    "run features unknown": (_set(("run", "features"), "magic"), "run.features"),
    "run encoding unknown": (_set(("run", "action_encoding"), "magic"), "run.action_encoding"),
    "top-level list": (lambda i: [i], "policy.json"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_JSON))
def test_a_crafted_policy_json_is_one_value_error_naming_the_file_and_field(tmp_path, tiny_run, case):
    change, field = CRAFTED_JSON[case]
    unit = _unit(tmp_path, tiny_run, change(_info(tiny_run)))
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        ck.load_trained_policy(unit)
    assert time.perf_counter() - t0 < 5.0  # nothing large allocated
    assert type(err.value) is ValueError
    assert str(unit) in str(err.value) and field in str(err.value), str(err.value)


def test_a_100000_deep_architecture_is_a_value_error_not_a_recursion_error(tmp_path, tiny_run):
    info = _info(tiny_run)
    text = json.dumps(info).replace('"architecture": {', '"architecture": ' + "[" * 100_000 + "]" * 100_000 + ', "x": {')
    unit = _unit(tmp_path, tiny_run, raw_json=text.encode())
    with pytest.raises(ValueError, match="nests 100"):
        ck.load_trained_policy(unit)


def test_non_utf8_and_oversized_json_are_refused(tmp_path, tiny_run):
    unit = _unit(tmp_path, tiny_run, raw_json=b'{"format": "\xff\xfe"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        ck.load_trained_policy(unit)
    with pytest.raises(ValueError, match="at most"):
        sf.loads_json_limited(b" " * (sf.MAX_JSON_BYTES + 1), "x.json")


def _with_tensor(run: Path, name: str, fn) -> dict:
    t = _tensors(run)
    t[name] = fn(t[name].clone())
    return t


@pytest.mark.parametrize("name, fn", [
    ("mlp_extractor.policy_net.0.weight", lambda t: t.fill_(float("nan"))),
    ("action_net.bias", lambda t: t.fill_(float("inf"))),
    ("log_std", lambda t: t.fill_(float("-inf"))),
])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, tiny_run, name, fn):
    unit = _unit(tmp_path, tiny_run, tensors=_with_tensor(tiny_run, name, fn))
    with pytest.raises(ValueError, match=f"{name}: holds NaN or infinite"):
        ck.load_trained_policy(unit)


def test_header_shapes_must_match_the_architecture(tmp_path, tiny_run):
    t = _tensors(tiny_run)
    t["action_net.weight"] = torch.zeros(2, 17)  # policy.json says [16 -> 2]
    unit = _unit(tmp_path, tiny_run, tensors=t)
    with pytest.raises(ValueError, match=r"header.action_net.weight.shape: is \[2, 17\]"):
        ck.load_trained_policy(unit)
    t = _tensors(tiny_run)
    del t["log_std"]
    unit = _unit(tmp_path, tiny_run, tensors=t)
    with pytest.raises(ValueError, match="header.log_std: is missing"):
        ck.load_trained_policy(unit)
    t = _tensors(tiny_run)
    t["action_net.bias"] = t["action_net.bias"].double()
    unit = _unit(tmp_path, tiny_run, tensors=t)
    with pytest.raises(ValueError, match="action_net.bias.dtype: must be F32"):
        ck.load_trained_policy(unit)


def test_a_header_that_claims_more_than_the_file_holds_is_refused_without_reading(tmp_path, tiny_run):
    good = (tiny_run / "policy.safetensors").read_bytes()
    for raw, field in [
        (struct.pack("<Q", 2**62) + good[8:], "field header: claims"),
        (b"\x01\x02", "shorter than a safetensors header"),
        (struct.pack("<Q", 8) + b"[1,2,3]" + b" ", "field header: must be an object"),
    ]:
        unit = _unit(tmp_path, tiny_run, raw_weights=raw)
        with pytest.raises(ValueError, match=field):
            ck.load_trained_policy(unit)
    # offsets past the end of the data
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])
    name = "action_net.bias"
    header[name]["data_offsets"] = [0, 10**9]
    hb = json.dumps(header).encode()
    unit = _unit(tmp_path, tiny_run, raw_weights=struct.pack("<Q", len(hb)) + hb + good[8 + n:])
    with pytest.raises(ValueError, match=f"header.{name}.data_offsets"):
        ck.load_trained_policy(unit)


def test_limits_are_what_the_docs_say():
    assert sf.MAX_LAYER_UNITS == 8192 and sf.MAX_HIDDEN_LAYERS == 32 and sf.MAX_POLICY_PARAMETERS == 2**25
    assert sf.MAX_JSON_DEPTH == 64
    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert "8192" in docs and "33.5 M" in docs


def test_a_deep_run_json_is_refused_by_name(tmp_path):
    p = tmp_path / "run.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="run.json"):
        ck.read_run_json(p)
