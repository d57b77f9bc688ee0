"""Sessions: every expert on whole episodes, a pool sweep, and the session envs' speed.

    python benchmarks/bench_session.py                 # all sections (a few minutes on 2 cores)
    python benchmarks/bench_session.py --only a        # experts (a), pool sweep (b), speed (c)
    python benchmarks/bench_session.py --quick         # fewer episodes, for a smoke test

(a) ``JMSRA-Session-v0``: ``--episodes`` (default 256) episodes rolled at once in one
    :class:`~jmsra_env.session_env.JMSRASessionVectorEnv` per expert, all experts on the same
    exogenous rounds (same seed; the world does not depend on actions): mean latency per round
    with a 95 % interval over episodes, the paired ratio to myopic JMSRA, evictions per episode.
(b) the same for pools of 64, 128, 160, 192, 256 MiB per agent and a pool that never binds
    (``--sweep-episodes`` episodes each): where myopic JMSRA breaks down.
(c) steps/s: the single session env against ``CartPole-v1`` (target >= 0.07x) and the batched
    session env at M = 1024 against the single-round batched env (target >= 0.5x).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from bench_env import _best_rate, _single_env_loop, _table, _vector_loop

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import evaluation as ev
from jmsra_env.session_experts import SESSION_EXPERT_NAMES

SESSION_ID = "jmsra_env/JMSRA-Session-v0"
MIB = 2**20
SWEEP_MIB_PER_AGENT = (64, 128, 160, 192, 256)
LARGE_POOL_BYTES = 4096 * MIB  # never binds at N = 4 (2.125 GiB at most)


def rollout(name: str, episodes: int, seed: int, config=None, horizon=None):
    """Latency per round ``(episodes, E)`` and evictions per episode ``(episodes,)`` of expert
    ``name``, all episodes at once in one session vector env (the one evaluation path,
    :func:`jmsra_env.evaluation.rollout_episodes`), and the wall time."""
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, dict(config or {}))
    policy = ev.session_expert(name, cfg, horizon)
    t0 = time.perf_counter()
    r = ev.rollout_episodes(cfg, policy, episodes, seed, vectorization="vector")
    wall = time.perf_counter() - t0
    lat = r.latency_s.reshape(episodes, cfg.episode_rounds)
    return lat, r.info["evictions"].reshape(episodes, -1).sum(axis=1), wall


def _ci(x: np.ndarray) -> str:
    m = x.mean()
    h = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    return f"{m:.3f} +- {h:.3f}"


def section_a(episodes: int, seed: int, horizon: int | None) -> dict:
    res = {name: rollout(name, episodes, seed, horizon=horizon) for name in SESSION_EXPERT_NAMES}
    ref = res["jmsra"][0].mean(axis=1)
    rows = []
    for name, (lat, evictions, wall) in res.items():
        per_ep = lat.mean(axis=1)
        ratio = per_ep / ref
        rows.append((name, _ci(per_ep), _ci(ratio), f"{evictions.mean():.2f}", f"{wall:.1f}"))
    _table(
        f"(a) {SESSION_ID}: {episodes} episodes x 64 rounds, same exogenous rounds for every expert",
        ("expert", "latency/round (s, 95% CI)", "ratio to myopic jmsra (paired)", "evictions/episode", "wall s"),
        rows,
    )
    return res


def section_b(episodes: int, seed: int, horizon: int | None) -> None:
    names = ("nl-only", "jmsra", "pool-aware", "lookahead", "clairvoyant")
    pools = [(f"{p} MiB x 4", p * 4 * MIB) for p in SWEEP_MIB_PER_AGENT] + [("4 GiB (never binds)", LARGE_POOL_BYTES)]
    rows = []
    for label, pool in pools:
        cells = [label]
        for name in names:
            lat, evictions, _ = rollout(name, episodes, seed, {"session.kv_pool_bytes": pool}, horizon)
            cells.append(f"{lat.mean():.3f} ({evictions.mean():.1f})")
        rows.append(tuple(cells))
    _table(
        f"(b) pool sweep, mean latency per round in s (evictions per episode), {episodes} episodes each",
        ("pool", *names),
        rows,
    )


def section_c(quick: bool) -> None:
    steps, repeats = (500, 2) if quick else (3000, 3)
    single = gym.make(SESSION_ID)
    cp = gym.make("CartPole-v1")
    nl = {"media": np.zeros(4, dtype=np.int8), "bandwidth": np.ones(4, dtype=np.float32)}
    r = _best_rate({"session": _single_env_loop(single, nl, steps), "cartpole": _single_env_loop(cp, 1, 4 * steps)},
                   repeats)
    m = 1024
    vec_steps = 64 if quick else 128
    batch_nl = {"media": np.zeros((m, 4), dtype=np.int8), "bandwidth": np.ones((m, 4), dtype=np.float32)}
    mk = lambda id_: gym.make_vec(id_, num_envs=m, vectorization_mode="vector_entry_point")  # noqa: E731
    v = _best_rate({"session": _vector_loop(mk(SESSION_ID), batch_nl, vec_steps),
                    "single-round": _vector_loop(mk("jmsra_env/JMSRA-v0"), batch_nl, vec_steps)}, repeats)
    _table(
        f"(c) speed (best of {repeats})",
        ("what", "session", "reference", "ratio", "target"),
        [
            ("single env, steps/s vs CartPole-v1", f"{r['session']:,.0f}", f"{r['cartpole']:,.0f}",
             f"{r['session'] / r['cartpole']:.3f}", ">= 0.07"),
            (f"batched M = {m}, env-steps/s vs JMSRA-v0 batched", f"{v['session']:,.0f}", f"{v['single-round']:,.0f}",
             f"{v['session'] / v['single-round']:.3f}", ">= 0.5"),
        ],
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("a", "b", "c"), help="run one section")
    p.add_argument("--quick", action="store_true", help="fewer episodes and steps (smoke test)")
    p.add_argument("--episodes", type=int, default=256, help="episodes of section (a)")
    p.add_argument("--sweep-episodes", type=int, default=64, help="episodes per pool of section (b)")
    p.add_argument("--horizon", type=int, default=None, help="lookahead / clairvoyant horizon")
    p.add_argument("--seed", type=int, default=2026)
    a = p.parse_args(argv)
    if a.quick:
        a.episodes, a.sweep_episodes = 16, 8
    if a.only in (None, "a"):
        section_a(a.episodes, a.seed, a.horizon)
    if a.only in (None, "b"):
        section_b(a.sweep_episodes, a.seed, a.horizon)
    if a.only in (None, "c"):
        section_c(a.quick)


if __name__ == "__main__":
    main()
