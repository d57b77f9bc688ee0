"""The multi-agent run format (marl.json + actor.safetensors) trusts nothing it claims either."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from jmsra_env import make_config


@pytest.fixture(scope="module")
def marl_run(tmp_path_factory) -> Path:
    from jmsra_agents.marl import MARLConfig, train

    run_dir = tmp_path_factory.mktemp("marl") / "mappo"
    hp = MARLConfig(total_frames=128, frames_per_batch=128, minibatch_size=64, n_epochs=1, hidden=16, depth=1,
                    eval_rounds=32, eval_every=1, checkpoint_every=0, bc_steps=0)
    train(make_config(), hp, run_dir, device="cpu")
    return run_dir


def _copy(run: Path, dest: Path, meta_change=None, tensor_change=None, raw_meta: str | None = None) -> Path:
    d = dest / "run"
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("tb", "checkpoints"))
    if meta_change is not None:
        meta = json.loads((d / "marl.json").read_text())
        meta_change(meta)
        (d / "marl.json").write_text(json.dumps(meta))
    if raw_meta is not None:
        (d / "marl.json").write_text(raw_meta)
    if tensor_change is not None:
        t = dict(st_load((d / "actor.safetensors").read_bytes()))
        tensor_change(t)
        (d / "actor.safetensors").write_bytes(st_save(t))
    return d


def _first(t: dict) -> str:
    return sorted(k for k in t if k.endswith("weight"))[0]


CASES = {
    "huge hidden": (lambda m: m["marl"].__setitem__("hidden", 30000), None, "marl.hidden"),
    "hidden x depth too many parameters": (lambda m: m["marl"].update(hidden=8192, depth=32), None, "parameters"),
    "hidden as string": (lambda m: m["marl"].__setitem__("hidden", "16"), None, "marl"),
    "unknown hyperparameter": (lambda m: m["marl"].__setitem__("bogus", 1), None, "field marl"),
    "config bad value": (lambda m: m["config"].__setitem__("n_agents", -1), None, "field config"),
    "config a list": (lambda m: m.__setitem__("config", [1]), None, "field config"),
    "nan mean": (lambda m: m["feature_stats"]["agent_mean"].__setitem__(0, float("nan")), None, "agent_mean[0]"),
    "zero std": (lambda m: m["feature_stats"]["state_std"].__setitem__(1, 0.0), None, "state_std[1]"),
    "short stats": (lambda m: m["feature_stats"]["agent_std"].pop(), None, "agent_std"),
    "missing stats": (lambda m: m["feature_stats"].pop("state_mean"), None, "state_mean"),
    "nan weights": (None, lambda t: t[_first(t)].fill_(float("nan")), "holds NaN"),
    "wrong shape": (None, lambda t: t.__setitem__(_first(t), torch.zeros(3, 3)), ".shape"),
    "extra tensor": (None, lambda t: t.__setitem__("evil", torch.zeros(1)), "header.evil"),
    "float64 tensor": (None, lambda t: t.__setitem__(_first(t), t[_first(t)].double()), ".dtype"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_marl_run_is_one_value_error_naming_the_file_and_field(tmp_path, marl_run, case):
    from jmsra_agents.marl import load_marl_policy

    meta_change, tensor_change, field = CASES[case]
    d = _copy(marl_run, tmp_path, meta_change, tensor_change)
    with pytest.raises(ValueError) as err:
        load_marl_policy(d)
    assert type(err.value) is ValueError
    assert str(d) in str(err.value) and field in str(err.value), str(err.value)


def test_a_deep_marl_json_is_a_value_error_not_a_recursion_error(tmp_path, marl_run):
    from jmsra_agents.marl import load_marl_policy

    d = _copy(marl_run, tmp_path, raw_meta='{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="nests"):
        load_marl_policy(d)


def test_the_untouched_marl_run_loads_and_acts(tmp_path, marl_run):
    from jmsra_agents.marl import load_marl_policy

    pol = load_marl_policy(_copy(marl_run, tmp_path))
    from jmsra_env.world import WorldProcess

    world = WorldProcess(make_config(), 8)
    world.reset(np.random.default_rng(0))
    action, _ = pol.predict(world.observation())
    assert np.all(np.isfinite(action["bandwidth"]))
