#!/usr/bin/env python
"""Fuzz what the tools read from files and flags: crafted safe files, sweep grids, dataset IDs and
train.py flags; count what goes wrong.

    python benchmarks/fuzz_files.py                # 600 cases per kind (~3 min on 2 cores)
    python benchmarks/fuzz_files.py --quick        # 60 per kind
    python benchmarks/fuzz_files.py --cases 2000 --seed 3

Kinds (each case is one crafted input):

* ``policy.json``: a tiny run's manifest with one to three fields replaced (huge / negative / float /
  bool / string sizes, NaN / inf statistics, deep nesting, missing keys, junk containers) or its
  bytes damaged (truncated, non-UTF-8, 100,000-deep arrays); the weights' hash kept consistent, so
  the schema, not the hash, has to catch it; loaded with ``load_trained_policy``.
* ``safetensors``: the weights with a crafted header (lengths, dtypes, shapes, offsets) or NaN / inf
  values, the manifest's hash made to match.
* ``marl``: a tiny multi-agent run's ``marl.json`` / ``actor.safetensors`` crafted the same ways;
  loaded with ``load_marl_policy`` (the TorchRL reference trainer's format).
* ``torch unit`` and ``team unit``: the same crafting (``policy.json`` or the weights) on the unit of
  a tiny ``train.py --backend torch`` run and of a tiny MAPPO run (``--algorithm mappo``), loaded
  with ``load_trained_policy`` as ``evaluate.py --model`` does.
* ``grid``: a sweep grid file of random keys and values (NaN, inf, huge ranges, unterminated quotes,
  non-UTF-8 bytes, junk types); ``sweep.py --grid FILE --out OUT`` with Ray replaced by a stub.
* ``dataset``: ``collect_dataset`` with random dataset IDs (``../``, absolute paths, dots, unicode,
  long, valid) and counts (bools, negative, huge, floats).
* ``train flags``: ``train.py`` command lines with random values for the checked flags, up to the
  point where the run directory would be created.

Outcomes: **handled**: refused with one ``ValueError`` (or exit status 2 and one line) that names
the file / flag / field, with nothing created; or accepted with a correct result (a policy whose
actions are finite and in range, a dataset inside the root with the episodes asked for, a grid train.py
accepts). **wrong**: any other exception, a traceback, a refusal that does not name the file, an
accepted input giving a wrong result, anything created outside where it belongs, more than
``--max-rss-mib`` of memory or ``--case-budget-s`` of time for one case. **lost**: the checker
itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JUNK = [None, True, False, 0, -1, -(2**63), 2**63, 10**12, 10**400, 30000, 8193, 1.5, -0.0, math.nan, math.inf,
        -math.inf, 1e308, "", "20", "nan", "relu", "os.system", [], [1, 2], [[[]]], {}, {"a": 1},
        {"linear": [30000, 30000]}, "x" * 1000]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# ---------------------------------------------------------------------------------------------
# Fixtures: a tiny single-agent run and a tiny multi-agent run


def tiny_torch_runs(workdir: Path) -> tuple[Path, Path]:
    """A tiny torch-backend PPO run and a tiny MAPPO run (their safe units)."""
    from jmsra_agents.training import TrainSpec, default_ppo, train

    out = []
    for algorithm in ("ppo", "mappo"):
        ppo = default_ppo(0, backend="torch", n_steps=4, batch_size=128, n_epochs=1, net_arch=(16,))
        spec = TrainSpec(backend="torch", algorithm=algorithm, n_envs=32, total_timesteps=128, bc_steps=0,
                         eval_freq=0, checkpoint_freq=0, compare_episodes=0, progress_bar=False, device="cpu",
                         logdir=str(workdir), run_name=f"tiny-{algorithm}", ppo=ppo)
        with contextlib.redirect_stdout(io.StringIO()):
            out.append(train(spec, log=None).run_dir)
    return out[0], out[1]


def tiny_runs(workdir: Path) -> tuple[Path, Path]:
    from jmsra_agents.marl import MARLConfig, train as marl_train
    from jmsra_agents.training import TrainSpec, default_ppo, train
    from jmsra_env import make_config

    ppo = default_ppo(0, n_steps=32, batch_size=64, n_epochs=1, net_arch=(16,))
    res = train(TrainSpec(total_timesteps=64, logdir=str(workdir), run_name="tiny", ppo=ppo, n_envs=2, bc_steps=0,
                          eval_freq=0, checkpoint_freq=0, compare_episodes=0, progress_bar=False, device="cpu"),
                log=None)
    hp = MARLConfig(total_frames=128, frames_per_batch=128, minibatch_size=64, n_epochs=1, hidden=16, depth=1,
                    eval_rounds=32, eval_every=1, checkpoint_every=0, bc_steps=0)
    marl_dir = workdir / "marl"
    with contextlib.redirect_stdout(io.StringIO()):
        marl_train(make_config(), hp, marl_dir, device="cpu")
    return res.run_dir, marl_dir


def _paths(obj, prefix=()):
    """Every (path, value) of a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and len(obj) <= 64:
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate_json(rng: np.random.Generator, info) -> object:
    info = copy.deepcopy(info)
    nodes = [p for p, _ in _paths(info) if p]
    for _ in range(int(rng.integers(1, 4))):
        path = nodes[int(rng.integers(len(nodes)))]
        parent = info
        try:
            for k in path[:-1]:
                parent = parent[k]
            op = rng.random()
            if op < 0.15 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif op < 0.25:
                parent[path[-1]] = json.loads(_deep(int(rng.choice([70, 1000]))))
            elif op < 0.4 and isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
                v = parent[path[-1]]
                parent[path[-1]] = type(v)(v * float(rng.choice([-1, 0, 1e3, 1e9, 1e300]))) if math.isfinite(
                    v * 1e300) else v
            else:
                parent[path[-1]] = copy.deepcopy(JUNK[int(rng.integers(len(JUNK)))])
        except (KeyError, IndexError, TypeError, OverflowError, ValueError, RecursionError):
            continue
    return info


def _json_bytes(obj) -> bytes:
    try:
        return json.dumps(obj).encode()
    except (ValueError, TypeError, RecursionError):
        return b"{"


def _damage(rng: np.random.Generator, data: bytes) -> bytes:
    op = rng.random()
    if op < 0.3:
        return data[: int(rng.integers(0, len(data)))]
    if op < 0.5:
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        return bytes(b)
    if op < 0.7:
        return data.replace(b'"architecture": {', b'"architecture": ' + _deep(100_000).encode() + b', "x": {', 1)
    if op < 0.85:
        return b"\xff\xfe" + data
    return _deep(int(rng.choice([65, 100, 100_000]))).encode()


class Outcome(Exception):
    pass


def _named(exc: BaseException, where: Path) -> bool:
    return str(where) in str(exc)


def policy_case(rng, run: Path, work: Path, kind: str):
    """``kind``: ``"policy.json"`` (the manifest crafted) or ``"safetensors"`` (the weights)."""
    from jmsra_agents import checkpoint as ck

    unit = work / "unit"
    shutil.rmtree(unit, ignore_errors=True)
    unit.mkdir()
    info = json.loads((run / "policy.json").read_text())
    weights = (run / "policy.safetensors").read_bytes()
    if kind == "policy.json":
        raw = _json_bytes(_mutate_json(rng, info)) if rng.random() < 0.75 else _damage(rng, _json_bytes(info))
        info_bytes = raw
    else:
        weights = _craft_weights(rng, weights)
        info["files"]["policy.safetensors"] = hashlib.sha256(weights).hexdigest()
        info_bytes = _json_bytes(info)
    if kind == "policy.json":  # keep the hash consistent when the JSON still parses
        try:
            parsed = json.loads(info_bytes)
            if isinstance(parsed, dict) and isinstance(parsed.get("files"), dict):
                parsed["files"]["policy.safetensors"] = hashlib.sha256(weights).hexdigest()
                info_bytes = _json_bytes(parsed)
        except (ValueError, RecursionError):
            pass
    (unit / "policy.json").write_bytes(info_bytes)
    (unit / "policy.safetensors").write_bytes(weights)
    try:
        pol = ck.load_trained_policy(unit)
    except ValueError as exc:
        return ("handled", "refused") if _named(exc, unit) else ("wrong", f"refusal not naming the file: {exc}")
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {str(exc)[:200]}"
    return _check_policy(pol)


def _check_policy(pol):
    from jmsra_env.world import WorldProcess

    world = WorldProcess(pol.config, 16)
    world.reset(np.random.default_rng(0))
    try:
        action, _ = pol.predict(world.observation())
    except ValueError as exc:  # a feature size the loader could not know: still one clean error
        return ("handled", "refused") if str(pol.model_path) in str(exc) or "expected features" in str(exc) \
            else ("wrong", f"predict: {exc}")
    action = np.asarray(action)
    if action.shape != (16, 2 * pol.n_agents) or not np.all(np.isfinite(action)) or np.abs(action).max() > 1.0:
        return "wrong", f"accepted policy acts wrongly: shape {action.shape}"
    return "handled", "valid"


def _craft_weights(rng, good: bytes) -> bytes:
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])
    body = bytearray(good[8 + n:])
    names = [k for k in header if k != "__metadata__"]
    name = names[int(rng.integers(len(names)))]
    op = rng.random()
    if op < 0.15:
        return struct.pack("<Q", int(rng.choice([0, 7, n + 10**6, 2**40, 2**63]))) + good[8:]
    if op < 0.3:  # NaN / inf values in one tensor
        begin, end = header[name]["data_offsets"]
        bad = np.frombuffer(bytes(body[begin:end]), dtype=np.float32).copy()
        bad[int(rng.integers(len(bad)))] = rng.choice([np.nan, np.inf, -np.inf])
        body[begin:end] = bad.tobytes()
        return good[:8 + n] + bytes(body)
    entry = header[name]
    field = rng.choice(["dtype", "shape", "data_offsets", "drop", "extra"])
    if field == "dtype":
        entry["dtype"] = str(rng.choice(["F64", "F16", "I64", "XX", "BOOL"]))
    elif field == "shape":
        entry["shape"] = [int(rng.choice([0, 1, 3, 30000, 2**40])) for _ in range(int(rng.integers(0, 4)))]
    elif field == "data_offsets":
        entry["data_offsets"] = [int(rng.integers(0, 2 * len(body) + 1)), int(rng.choice([0, len(body), 10**12]))]
    elif field == "drop":
        header.pop(name)
    else:
        header["mlp_extractor.policy_net.9.weight"] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + bytes(body)


def marl_case(rng, run: Path, work: Path):
    from jmsra_agents.marl import load_marl_policy

    d = work / "marl"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    meta = json.loads((run / "marl.json").read_text())
    actor = (run / "actor.safetensors").read_bytes()
    if rng.random() < 0.6:
        (d / "marl.json").write_bytes(_json_bytes(_mutate_json(rng, meta)) if rng.random() < 0.8
                                      else _damage(rng, _json_bytes(meta)))
        (d / "actor.safetensors").write_bytes(actor)
    else:
        (d / "marl.json").write_bytes(_json_bytes(meta))
        (d / "actor.safetensors").write_bytes(_craft_weights(rng, actor))
    try:
        pol = load_marl_policy(d)
    except ValueError as exc:
        return ("handled", "refused") if _named(exc, d) else ("wrong", f"refusal not naming the file: {exc}")
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {str(exc)[:200]}"
    from jmsra_env.world import WorldProcess

    world = WorldProcess(pol.config, 8)
    world.reset(np.random.default_rng(0))
    action, _ = pol.predict(world.observation())
    if not np.all(np.isfinite(action["bandwidth"])):
        return "wrong", "accepted multi-agent policy gives non-finite actions"
    return "handled", "valid"


GRID_VALUES = ['["jmsra_env/JMSRA-v0"]', '"jmsra_env/JMSRA-v0"', '["jmsra_env/JMSRA-N9-v0"]', '[1, 2]', "nan", "inf",
               "-inf", "1e400", '"0..100000000"', '"0..4"', '"0..99999999999999999999"', '[0, 0]', '"1..0"', "true",
               '"--n-envs \'4"', '"--n-envs 2"', '"--target-kl -1"', '"--log-std-init nan"', "[nan]", "[inf, 1e-4]",
               '["nan"]', "[{a = 1}]", "[[1, 2]]", "100000000000000000000", "0", "-5", "3.5", '"x"', '["ppo"]',
               '["sac"]', "[]", '"\\u0000"', "1979-05-27"]


def grid_case(rng, work: Path):
    from jmsra_agents import sweep as sw

    keys = [*sw.GRID_KEYS, "seed", "hyperparams.learning_rate", "hyperparams.net_arch", "hyperparams.n_steps",
            "hyperparams.bogus"]
    lines = ['env_ids = ["jmsra_env/JMSRA-v0"]'] if rng.random() < 0.8 else []
    tables: dict[str, list[str]] = {}
    for _ in range(int(rng.integers(1, 5))):
        key = str(rng.choice(keys))
        value = str(rng.choice(GRID_VALUES))
        if key.startswith("hyperparams."):
            tables.setdefault("hyperparams", []).append(f"{key.split('.', 1)[1]} = {value}")
        elif key != "hyperparams":
            lines.append(f"{key} = {value}")
    text = "\n".join(lines) + "\n" + "".join(f"[{t}]\n" + "\n".join(v) + "\n" for t, v in tables.items())
    data = text.encode()
    if rng.random() < 0.1:
        data = data + b"# caf\xe9\n"
    if rng.random() < 0.05:
        data = b"x = " + _deep(5000).encode()
    grid = work / "grid.toml"
    grid.write_bytes(data)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = []

    def fake_ray(*a, **k):
        started.append(1)
        raise _StubRay()

    err = io.StringIO()
    old = sw._init_ray
    sw._init_ray = fake_ray
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = sw.main(["--grid", str(grid), "--out", str(out)])
    except _StubRay:
        rc = "ray"
    except SystemExit as exc:
        rc = exc.code
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {str(exc)[:200]} <- {text[:200]!r}"
    finally:
        sw._init_ray = old
    msg = err.getvalue()
    if started:  # the grid passed every check: train.py must accept each trial's flags
        shutil.rmtree(out, ignore_errors=True)
        return "handled", "valid"
    if rc == 2 and msg.count("\n") == 1 and "Traceback" not in msg and not out.exists():
        return "handled", "refused"
    return "wrong", f"exit {rc}, out exists {out.exists()}: {msg[:300]!r} <- {text[:200]!r}"


class _StubRay(Exception):
    pass


ID_PARTS = ["jmsra_env", "JMSRA-Box", "ok-v0", "..", ".", "", "/", "/etc", "a.b", "nam e", "ü", "x" * 250, "-v0",
            "name-v", "v0", "name-v1", "name-v99999999", "\0", "~", "$HOME", "ns", "..-v0", "_-v0"]
COUNTS = [True, False, 0, 1, 2, -1, 1.0, "2", None, 10**9, 2**64, np.int64(1)]


def dataset_case(rng, work: Path):
    from jmsra_env.datasets import collect_dataset, load_dataset

    root = work / "root" / "minari"
    outside = work / "root"
    shutil.rmtree(outside, ignore_errors=True)
    outside.mkdir()
    parts = [str(rng.choice(ID_PARTS)) for _ in range(int(rng.integers(1, 4)))]
    dataset_id = "/".join(parts) if rng.random() < 0.7 else "".join(parts)
    n = COUNTS[int(rng.integers(len(COUNTS)))] if rng.random() < 0.4 else 1
    seed = COUNTS[int(rng.integers(len(COUNTS)))] if rng.random() < 0.3 else 0
    try:
        with contextlib.redirect_stderr(io.StringIO()), _quiet_warnings():
            collect_dataset("nl-only", n_episodes=n, seed=seed, config={"episode_rounds": 2}, root=root,
                            dataset_id=dataset_id)
    except ValueError as exc:
        names = any(w in str(exc) for w in ("dataset_id", "n_episodes", "seed"))
        if not names:
            return "wrong", f"refusal not naming the field: {exc}"
        if any(outside.iterdir()):
            return "wrong", f"refused but created {sorted(p.name for p in outside.iterdir())} <- {dataset_id!r}"
        return "handled", "refused"
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {str(exc)[:200]} <- {dataset_id!r}, n={n!r}, seed={seed!r}"
    if sorted(p.name for p in outside.iterdir()) != ["minari"]:
        return "wrong", f"files outside the root <- {dataset_id!r}"
    path = Path(os.path.normpath(root / dataset_id))
    if os.path.commonpath([root, path]) != str(root):
        return "wrong", f"dataset outside the root <- {dataset_id!r}"
    with _quiet_warnings():
        ds = load_dataset(dataset_id, root=root)
    if ds.total_episodes != int(n):
        return "wrong", f"{ds.total_episodes} episodes, asked {n!r}"
    return "handled", "valid"


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


FLAG_VALUES = {
    "--seed": ["-1", "0", "7", "2147483647", "2147483648", "99999999999999999999"],
    "--log-std-init": ["nan", "inf", "-inf", "-1", "21", "1e300"],
    "--bc-lr": ["nan", "0", "-1", "1e-3", "inf"],
    "--learning-rate": ["nan", "inf", "0", "3e-4"],
    "--target-kl": ["-1", "0", "nan", "0.02", "inf"],
    "--net-arch": ["100000000,100000000", "8192,8192", "16", "0", "64,64", ",".join(["8"] * 40), "x"],
    "--n-envs": ["0", "1", "100000", "-3"],
    "--n-steps": ["1", "4000000", "32"],
    "--total-timesteps": ["0", "64", "10000000000000000"],
    "--bc-rounds": ["0", "1000000000000", "100"],
    "--gamma": ["1.5", "nan", "0.9"],
    "--clip-range": ["inf", "0.2", "-0.1"],
    "--eval-episodes": ["-1", "0", "1000000"],
    "--run-name": ["..", "a/b", "x" * 300, "ok"],
    "--logdir": ["FILE", "FILE/sub", "/proc/fuzz", "NEW"],
}


def flags_case(rng, work: Path):
    from jmsra_agents import cli_train
    from jmsra_agents import training as t

    base = work / "flags"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    (base / "afile").write_text("data")
    argv = ["--bc-steps", "0", "--device", "cpu", "--run-name", "x", "--logdir", str(base / "runs")]
    for flag in rng.choice(list(FLAG_VALUES), size=int(rng.integers(1, 4)), replace=False):
        value = str(rng.choice(FLAG_VALUES[flag]))
        value = {"FILE": str(base / "afile"), "FILE/sub": str(base / "afile" / "sub"),
                 "NEW": str(base / "new" / "deep")}.get(value, value)
        argv += [flag, value]
    parser = cli_train.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
            cli_train.validate_args(args)
            spec = cli_train.spec_from_args(args, argv, parser)
            t.validate_spec(spec)
    except SystemExit as exc:
        lines = err.getvalue().strip().splitlines()  # argparse: the usage, then one error line
        ok = exc.code == 2 and bool(lines) and ": error: " in lines[-1] and "Traceback" not in err.getvalue()
        return ("handled", "refused") if ok and _untouched(base) else ("wrong", f"exit {exc.code}: {err.getvalue()!r}")
    except t.TrainSpecError as exc:
        if not str(exc).startswith("--") and "--" not in str(exc)[:60]:
            return "wrong", f"refusal not naming the flag: {exc}"
        return ("handled", "refused") if _untouched(base) else ("wrong", f"files created: {argv}")
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {str(exc)[:200]} <- {argv}"
    return ("handled", "valid") if _untouched(base) else ("wrong", f"files created by the checks: {argv}")


def _untouched(base: Path) -> bool:
    return sorted(p.name for p in base.iterdir()) == ["afile"] and (base / "afile").read_text() == "data"


# ---------------------------------------------------------------------------------------------


def run(kind: str, cases, budget_s: float, max_rss_mib: float) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    examples: list[str] = []
    for case in cases:
        t0, rss0 = time.perf_counter(), _rss_mib()
        try:
            outcome, why = case()
        except Exception:  # noqa: BLE001  (the checker itself failed)
            outcome, why = "lost", traceback.format_exc()[-500:]
        if outcome != "lost" and time.perf_counter() - t0 > budget_s:
            outcome, why = "wrong", f"ran {time.perf_counter() - t0:.1f} s (> {budget_s} s): {why}"
        if outcome != "lost" and _rss_mib() - rss0 > max_rss_mib:
            outcome, why = "wrong", f"peak memory grew {_rss_mib() - rss0:.0f} MiB: {why}"
        counts[outcome] += 1
        if outcome == "handled":
            counts[why] += 1
        elif len(examples) < 6:
            shown = why[-500:] if outcome == "lost" else why[:400]
            examples.append(f"[{kind}] {outcome}: {shown}")
    return counts, examples


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=600, help="cases per kind (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-budget-s", type=float, default=10.0, help="a slower case counts as wrong")
    p.add_argument("--max-rss-mib", type=float, default=512.0, help="memory growth of one case that counts as wrong")
    p.add_argument("--quick", action="store_true", help="60 cases per kind")
    p.add_argument("--kinds", default="policy.json,safetensors,torch unit,team unit,marl,grid,dataset,train flags")
    args = p.parse_args(argv)
    if args.quick:
        args.cases = 60
    import jmsra_env  # noqa: F401 - registers the environments

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="fuzz_files_"))
    t0 = time.perf_counter()
    run_dir, marl_dir = tiny_runs(work / "runs")
    torch_dir, team_dir = tiny_torch_runs(work / "runs")

    def either(unit_dir):  # the manifest or the weights, half and half
        return lambda: policy_case(rng, unit_dir, work, "policy.json" if rng.random() < 0.5 else "safetensors")
    makers = {
        "policy.json": lambda: policy_case(rng, run_dir, work, "policy.json"),
        "safetensors": lambda: policy_case(rng, run_dir, work, "safetensors"),
        "torch unit": either(torch_dir),
        "team unit": either(team_dir),
        "marl": lambda: marl_case(rng, marl_dir, work),
        "grid": lambda: grid_case(rng, work),
        "dataset": lambda: dataset_case(rng, work),
        "train flags": lambda: flags_case(rng, work),
    }
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    results = {}
    examples: list[str] = []
    for kind in kinds:
        c, ex = run(kind, (makers[kind] for _ in range(args.cases)), args.case_budget_s, args.max_rss_mib)
        results[kind] = c
        examples += ex
    total = sum(results.values(), Counter())
    print(f"\nfuzz_files: seed {args.seed}, {time.perf_counter() - t0:.0f} s ({work})")
    print(f"{'':<12} {'tried':>7} {'handled':>8} {'(refused':>9} {'valid)':>7} {'wrong':>6} {'lost':>5}")
    for name, c in [*results.items(), ("total", total)]:
        tried = c["handled"] + c["wrong"] + c["lost"]
        print(f"{name:<12} {tried:>7} {c['handled']:>8} {c['refused']:>9} {c['valid']:>7} {c['wrong']:>6} {c['lost']:>5}")
    for line in examples:
        print(line)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not total["wrong"] and not total["lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
