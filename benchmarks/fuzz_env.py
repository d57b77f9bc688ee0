"""Fuzz the environment with random configs and malformed actions; count what goes wrong.

    python benchmarks/fuzz_env.py                  # 10,000 configs, 3,000 actions (~2 min on 2 cores)
    python benchmarks/fuzz_env.py --quick          # 500 configs, 300 actions
    python benchmarks/fuzz_env.py --configs 50000 --seed 3

Every case ends in one of four outcomes:

* **handled**: a clean ``ValueError`` that names the bad field (``config field '...'``, ``unknown
  config key``, ``action field '...'``, ``action must ...``), or a valid result: finite, in-space
  observations and a finite reward in ``[-latency_cap_s, 0]`` that does not beat the exact optimum
  (``solvers.exhaustive``, for teams of up to 8) by more than 1e-9 relative;
* **wrong**: any other exception, a NaN/inf reward or observation, an observation outside the
  observation space, a reward better than the optimum, or an env whose state changed although its
  action was rejected;
* **lost**: a case whose outcome could not be established (the checker itself failed, or the case
  ran past ``--case-budget-s``).

Configs: 1 to 4 keys, each set to a random value: the default scaled over many decades, float64
extremes (subnormals, the largest float, +-inf, NaN), huge ints, bools, NumPy scalars, strings,
``None``, containers. Accepted configs are reset and stepped three rounds with random actions.
Actions: hand-written malformed actions and random ones over the whole float64 range, on the Dict
and Box forms of N = 4 and N = 8.

Datasets (``jmsra_env.datasets.collect_dataset``): random dataset IDs (``../``, absolute paths,
dots, NUL, unicode, long, valid) and counts (bools, negative, huge, floats, strings); handled: a
``ValueError`` naming ``dataset_id`` / ``n_episodes`` / ``seed`` with nothing written anywhere, or
a dataset inside the root holding the episodes asked for; wrong: anything else. (Crafted model
files, sweep grids and train.py flags: ``benchmarks/fuzz_files.py``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import time
import traceback
from collections import Counter

import numpy as np

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import JMSRAEnv, make_config, model, solvers
from jmsra_env.config import ChannelConfig, ScenarioConfig, WorkloadConfig

FMAX = float(np.finfo(np.float64).max)
OPTIMUM_MAX_AGENTS = 8
CONFIG_ERROR = re.compile(r"config field '[^']+'|unknown config key '[^']+'")
ACTION_ERROR = re.compile(r"action field '[^']+'|action must")
EXTREMES = [0.0, -0.0, 5e-324, 1e-310, 2.2250738585072014e-308, 1e-300, 1e-30, 1e30, 1e300, 9e307,
            FMAX, -FMAX, -1.0, math.inf, -math.inf, math.nan]
NONNEG_EXTREMES = [0.0, 5e-324, 1e-310, 2.2250738585072014e-308, 1e-300, 1e-30, 1.0, 1e30, 1e300, 9e307, FMAX]
JUNK = [None, "", "abc", "1e7", "llama-3.1-8b", "mistral-7b", "snapdragon-8-gen-3", [], [1, 2],
        ["jetson-orin-nano-8gb", "snapdragon-8-gen-3"], ("jetson-agx-orin-64gb",), {"a": 1}, object(),
        b"x", 1j, True, False, np.bool_(True)]


def _defaults() -> dict:
    out = {}
    for cls in (ScenarioConfig, ChannelConfig, WorkloadConfig):
        inst = cls()
        for f in dataclasses.fields(cls):
            if f.name not in ("channel", "workload"):
                out[f.name] = getattr(inst, f.name)
    return out


DEFAULTS = _defaults()
KEYS = sorted(DEFAULTS) + ["channel", "workload"]


def random_value(rng: np.random.Generator, key: str):
    """A value for ``key``: plausible, extreme or ill-typed."""
    default = DEFAULTS.get(key)
    if rng.random() < 0.5 and isinstance(default, (int, float)) and not isinstance(default, bool):
        # plausible: the default within two decades, as a Python or NumPy number
        v = float(default or 0.5) * 10.0 ** rng.uniform(-1, 1)
        if isinstance(default, int):
            return [int, np.int64, np.int32][rng.integers(3)](max(0, min(int(v), 2**31 - 1)))
        return [float, np.float64, np.float32][rng.integers(3)](v)
    kind = rng.integers(9)
    if kind == 0 and isinstance(default, (int, float)) and not isinstance(default, bool):
        v = float(default or 1.0) * 10.0 ** rng.uniform(-4, 4) * rng.choice([1, 1, 1, -1])
        return int(v) if isinstance(default, int) else v
    if kind == 1:
        return EXTREMES[rng.integers(len(EXTREMES))]
    if kind == 2:
        return float(rng.choice([1, -1]) * 10.0 ** rng.uniform(-320, 308))
    if kind == 3:
        return int(rng.integers(-10, 3000))
    if kind == 4:
        return 10 ** int(rng.integers(18, 400)) * int(rng.choice([1, -1]))
    if kind == 5:
        base = float(default) if isinstance(default, (int, float)) and default is not None else 1.0
        t = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16][rng.integers(6)]
        with np.errstate(all="ignore"):
            return t(base * 10.0 ** rng.uniform(-1, 1)) if "int" not in t.__name__ else t(max(0, min(200, base)))
    if kind == 6:
        return JUNK[rng.integers(len(JUNK))]
    if kind == 7 and default is not None:
        return default  # a valid value next to broken ones
    return float(rng.uniform(-2, 2))


def random_shares(rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-negative shares over the whole float64 range (zeros, subnormals, the largest float)."""
    kind = rng.integers(4)
    if kind == 0:
        return rng.uniform(0, 1, n)
    if kind == 1:
        return rng.choice(NONNEG_EXTREMES, n)
    if kind == 2:
        return 10.0 ** rng.uniform(-323, 308, n) * (rng.random(n) < 0.8)
    return np.where(rng.random(n) < 0.5, 1e-310, 1.0)


def _state(env) -> tuple:
    u = env.unwrapped
    terms = u._terms
    arrays = tuple(getattr(terms, f).copy() for f in model.TERM_ARRAY_FIELDS) if terms is not None else ()
    return u._round, repr(u.np_random.bit_generator.state), arrays, u._world._t


def _same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[3] == b[3] and all(
        np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True)
    )


def _check_obs(env, obs) -> str | None:
    if not all(np.all(np.isfinite(v)) for v in obs.values()):
        return "non-finite observation"
    if not env.observation_space.contains(obs):
        return "observation outside the observation space"
    return None


def _check_step(env, action) -> str | None:
    """Step a valid action; None when the result is valid, else what is wrong."""
    cfg = env.unwrapped.config
    terms = env.unwrapped.current_terms()
    obs, reward, terminated, truncated, _ = env.step(action)
    if not math.isfinite(reward) or not (-cfg.latency_cap_s <= reward <= 0.0):
        return f"reward {reward!r} not finite in [-cap, 0]"
    if cfg.n_agents <= OPTIMUM_MAX_AGENTS:
        best = float(solvers.exhaustive(terms).latency_s)
        if -reward < best * (1.0 - 1e-9):
            return f"reward {reward!r} beats the optimum {-best!r}"
    return _check_obs(env, obs)


def config_case(rng: np.random.Generator) -> tuple[str, str]:
    keys = rng.choice(KEYS, size=int(rng.integers(1, 5)), replace=False)
    overrides = {str(k): random_value(rng, str(k)) for k in keys}
    try:
        cfg = make_config(**overrides)
    except ValueError as exc:
        if CONFIG_ERROR.search(str(exc)):
            return "handled", "refused"
        return "wrong", f"ValueError not naming a field: {exc} <- {overrides!r}"
    except Exception as exc:  # noqa: BLE001  (the point: any other exception is a defect)
        return "wrong", f"{type(exc).__name__}: {exc} <- {overrides!r}"
    try:
        env = JMSRAEnv(cfg)
        obs, _ = env.reset(seed=int(rng.integers(1 << 31)))
        problem = _check_obs(env, obs)
        for _ in range(3):
            if problem:
                break
            n = cfg.n_agents
            problem = _check_step(env, {"media": rng.integers(0, 2, n), "bandwidth": random_shares(rng, n)})
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__} on an accepted config: {exc} <- {overrides!r}"
    return ("wrong", f"{problem} <- {overrides!r}") if problem else ("handled", "valid")


def malformed_actions(n: int, form: str) -> list:
    """Hand-written bad actions for an env of ``n`` agents in ``form``."""
    ones, zeros = np.ones(n), np.zeros(n)
    if form == "box":
        good = np.zeros(2 * n)
        return [None, "x", 3.0, [], good[:-1], np.zeros(2 * n + 1), np.zeros((2, 2 * n)),
                np.full(2 * n, np.nan), np.full(2 * n, np.inf), np.full(2 * n, 1.5), np.full(2 * n, -2.0),
                np.array(["a"] * 2 * n), np.array([None] * 2 * n), {"media": ones, "bandwidth": ones},
                np.full(2 * n, FMAX), np.full(2 * n, -FMAX), [[0.0] * n, [0.0] * n], good.astype(object),
                np.full(2 * n, 1.0 + 1e-3)]
    return [None, "x", 3.0, [], ones, {"media": ones}, {"bandwidth": ones},
            {"media": ones, "bandwidth": ones, "extra": 1}, {1: ones, "media": ones, "bandwidth": ones},
            {"media": ones[:-1], "bandwidth": ones}, {"media": ones, "bandwidth": np.ones(n + 1)},
            {"media": np.full(n, 0.5), "bandwidth": ones}, {"media": np.full(n, 2), "bandwidth": ones},
            {"media": np.full(n, -1), "bandwidth": ones}, {"media": np.full(n, np.nan), "bandwidth": ones},
            {"media": ones, "bandwidth": -ones}, {"media": ones, "bandwidth": np.full(n, np.nan)},
            {"media": ones, "bandwidth": np.full(n, np.inf)}, {"media": ones, "bandwidth": np.full(n, -0.0) - 1e-300},
            {"media": ones, "bandwidth": "abc"}, {"media": "abc", "bandwidth": ones},
            {"media": ones, "bandwidth": [None] * n}, {"media": ones, "bandwidth": np.ones((2, n))},
            {"media": np.ones((n, 1)), "bandwidth": ones}, {"media": ones, "bandwidth": [ones]},
            {"media": ones.astype(bool), "bandwidth": zeros}, {"media": ones, "bandwidth": np.full(n, FMAX)},
            {"media": ones, "bandwidth": np.full(n, 5e-324)}, {"media": [1j] * n, "bandwidth": ones}]


def random_action(rng: np.random.Generator, n: int, form: str):
    if form == "box":
        kind = rng.integers(3)
        if kind == 0:
            return rng.uniform(-1, 1, 2 * n)
        if kind == 1:
            return rng.choice([-1.0, 1.0, 0.0, -1.0 + 1e-16, 1.0 - 1e-16, 5e-324, -5e-324], 2 * n)
        return rng.uniform(-1.1, 1.1, 2 * n)  # some out of range: must be refused
    media = rng.integers(0, 2, n) if rng.random() < 0.9 else rng.choice([0.0, 1.0, 0.5, -1.0, 2.0], n)
    shares = random_shares(rng, n)
    if rng.random() < 0.1:  # must be refused
        shares[rng.integers(n)] = rng.choice([-1.0, -1e-300, np.nan, np.inf])
    return {"media": media, "bandwidth": shares}


def action_case(env, action) -> tuple[str, str]:
    before = _state(env)
    try:
        problem = _check_step(env, action)
    except ValueError as exc:
        if not ACTION_ERROR.search(str(exc)):
            return "wrong", f"ValueError not naming a field: {exc} <- {action!r}"
        if not _same_state(before, _state(env)):
            return "wrong", f"state changed after a rejected action <- {action!r}"
        return "handled", "refused"
    except Exception as exc:  # noqa: BLE001
        return "wrong", f"{type(exc).__name__}: {exc} <- {action!r}"
    return ("wrong", f"{problem} <- {action!r}") if problem else ("handled", "valid")


DATASET_ID_PARTS = ["jmsra_env", "JMSRA-Box", "ok-v0", "..", ".", "", "/", "/etc", "a.b", "ü", "x" * 250, "-v0",
                    "name-v", "name-v1", "\0", "~", "ns", "_-v0"]
DATASET_COUNTS = [True, False, 0, 1, 2, -1, 1.0, "2", None, 10**9, 2**64, np.int64(1)]


def dataset_case(rng: np.random.Generator, work) -> tuple[str, str]:
    import shutil
    import warnings
    from pathlib import Path

    from jmsra_env.datasets import collect_dataset, load_dataset

    top = Path(work) / "top"
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir()
    root = top / "root"
    parts = [str(rng.choice(DATASET_ID_PARTS)) for _ in range(int(rng.integers(1, 4)))]
    dataset_id = "/".join(parts)
    n = DATASET_COUNTS[int(rng.integers(len(DATASET_COUNTS)))] if rng.random() < 0.4 else 1
    seed = DATASET_COUNTS[int(rng.integers(len(DATASET_COUNTS)))] if rng.random() < 0.3 else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            collect_dataset("nl-only", n_episodes=n, seed=seed, config={"episode_rounds": 2}, root=root,
                            dataset_id=dataset_id)
        except ValueError as exc:
            if not re.search(r"dataset_id|n_episodes|seed", str(exc)):
                return "wrong", f"ValueError not naming a field: {exc}"
            if any(top.iterdir()):
                return "wrong", f"refused but wrote {sorted(p.name for p in top.iterdir())} <- {dataset_id!r}"
            return "handled", "refused"
        except Exception as exc:  # noqa: BLE001
            return "wrong", f"{type(exc).__name__}: {exc} <- {dataset_id!r}, n={n!r}, seed={seed!r}"
        if sorted(p.name for p in top.iterdir()) != ["root"]:
            return "wrong", f"wrote outside the root <- {dataset_id!r}"
        if load_dataset(dataset_id, root=root).total_episodes != int(n):
            return "wrong", f"wrong episode count <- n={n!r}"
    return "handled", "valid"


def run(kind: str, cases, budget_s: float) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    examples: list[str] = []
    for case in cases:
        t0 = time.perf_counter()
        try:
            outcome, why = case()
        except Exception:  # noqa: BLE001  (the checker itself failed)
            outcome, why = "lost", traceback.format_exc(limit=2)
        if outcome != "lost" and time.perf_counter() - t0 > budget_s:
            outcome, why = "lost", f"ran {time.perf_counter() - t0:.1f} s (> {budget_s} s)"
        counts[outcome] += 1
        if outcome == "handled":
            counts[why] += 1  # refused (a clean ValueError) or valid (a checked result)
        elif len(examples) < 8:
            examples.append(f"[{kind}] {outcome}: {why[:400]}")
    return counts, examples


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", type=int, default=10_000, help="random configs (default 10,000)")
    p.add_argument("--actions", type=int, default=3_000, help="random actions (default 3,000)")
    p.add_argument("--datasets", type=int, default=300, help="random dataset IDs and counts (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-budget-s", type=float, default=10.0, help="a slower case counts as lost")
    p.add_argument("--quick", action="store_true", help="500 configs, 300 actions")
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.actions, args.datasets = 500, 300, 30
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    config_counts, config_examples = run("config", (lambda: config_case(rng) for _ in range(args.configs)),
                                         args.case_budget_s)
    action_counts: Counter = Counter()
    action_examples: list[str] = []
    envs = [JMSRAEnv(n_agents=n, action_form=form) for n in (4, 8) for form in ("dict", "box")]
    for env in envs:
        env.reset(seed=args.seed)
        n, form = env.config.n_agents, env.action_form
        hand = [lambda a=a, env=env: action_case(env, a) for a in malformed_actions(n, form)]
        rand = [lambda env=env: action_case(env, random_action(rng, n, form))
                for _ in range(args.actions // len(envs))]
        c, ex = run(f"action {form} N={n}", hand + rand, args.case_budget_s)
        action_counts += c
        action_examples += ex[: max(0, 8 - len(action_examples))]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fuzz_env_datasets_") as work:
        dataset_counts, dataset_examples = run(
            "dataset", (lambda: dataset_case(rng, work) for _ in range(args.datasets)), args.case_budget_s)
    elapsed = time.perf_counter() - t0

    print(f"\nfuzz_env: seed {args.seed}, {elapsed:.0f} s")
    print(f"{'':<10} {'tried':>8} {'handled':>8} {'(refused':>9} {'valid)':>7} {'wrong':>6} {'lost':>5}")
    for name, c in (("configs", config_counts), ("actions", action_counts), ("datasets", dataset_counts),
                    ("total", config_counts + action_counts + dataset_counts)):
        tried = c["handled"] + c["wrong"] + c["lost"]
        print(f"{name:<10} {tried:>8} {c['handled']:>8} {c['refused']:>9} {c['valid']:>7} {c['wrong']:>6} "
              f"{c['lost']:>5}")
    for line in config_examples + action_examples + dataset_examples:
        print(line)
    return 0 if not (config_counts + action_counts + dataset_counts)["wrong"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
