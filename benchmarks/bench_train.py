#!/usr/bin/env python
"""Benchmark: train PPO with train.py for a budget, then compare with the experts on held-out seeds.

Prints (and with ``--out`` writes as JSON):

* held-out evaluation (seeds 30000+, never used for training or model selection): mean latency of
  the final and the best PPO model, of JMSRA, the exhaustive optimum (N <= 8), NL-only and KV-only,
  and PPO's gap to each;
* the learning curve: gap to JMSRA on the evaluation seeds (10000+) against environment steps;
* training throughput in env-steps/s, next to SB3 PPO on CartPole-v1 (8 envs, CPU, same machine,
  same run) as the reference.

Usage::

    python benchmarks/bench_train.py --timesteps 1000000               # the issue's budget
    python benchmarks/bench_train.py --timesteps 1000000 --bc-steps 0  # pure RL, no expert init
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT_SEED = 30_000


def cartpole_reference(steps: int, threads: int) -> float:
    """SB3 PPO on CartPole-v1 with 8 DummyVecEnv envs on CPU: env-steps/s including updates."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    venv = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=256, seed=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--timesteps", type=int, default=1_000_000)
    p.add_argument("--env-id", default="jmsra_env/JMSRA-v0")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bc-steps", type=int, default=None, help="train.py's default when omitted")
    p.add_argument("--action-encoding", default=None, help="train.py's default when omitted")
    p.add_argument("--curve-points", type=int, default=10, help="evaluations during training")
    p.add_argument("--eval-episodes", type=int, default=32, help=f"held-out episodes (seeds {HELD_OUT_SEED}+)")
    p.add_argument("--reference-steps", type=int, default=20_000, help="CartPole reference budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--logdir", default=None, help="keep the run here (default: a temporary directory)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    args = p.parse_args(argv)

    import train
    from jmsra_agents.checkpoint import load_trained_policy
    from jmsra_agents.evaluation import TrainedModelPolicy, compare_with_experts, format_table

    logdir = Path(args.logdir) if args.logdir else Path(tempfile.mkdtemp(prefix="bench_train_"))
    run_name = f"bench-{args.timesteps}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    targv = [
        "--env-id", args.env_id, "--total-timesteps", str(args.timesteps), "--n-envs", str(args.n_envs),
        "--seed", str(args.seed), "--logdir", str(logdir), "--run-name", run_name,
        "--eval-freq", str(max(args.timesteps // args.curve_points, 1)), "--checkpoint-freq", "0",
        "--compare-episodes", "0", "--no-progress-bar", "--threads", str(args.threads), "--device", "cpu",
    ]
    if args.bc_steps is not None:
        targv += ["--bc-steps", str(args.bc_steps)]
    if args.action_encoding is not None:
        targv += ["--action-encoding", args.action_encoding]
    targv += list(args.extra)
    print("train.py " + " ".join(targv), flush=True)
    t0 = time.perf_counter()
    rc = train.main(targv)
    wall = time.perf_counter() - t0
    if rc != 0:
        return rc
    run_dir = logdir / run_name
    info = json.loads((run_dir / "run.json").read_text())
    curve = json.loads((run_dir / "evaluations.json").read_text())["evaluations"]

    final = load_trained_policy(run_dir)
    best = load_trained_policy(run_dir / "best_model.zip")
    cfg = final.config
    experts = ["jmsra", "nl-only", "kv-only"] + (["optimal"] if cfg.n_agents <= 8 else [])
    res = compare_with_experts(
        final.env_id, info.get("config_overrides", {}),
        [TrainedModelPolicy(final, cfg, "ppo (final)"), TrainedModelPolicy(best, cfg, "ppo (best)")],
        experts=experts, episodes=args.eval_episodes, seed=HELD_OUT_SEED,
    )
    ref_sps = cartpole_reference(args.reference_steps, args.threads)
    sps = info.get("env_steps_per_s", float("nan"))

    print()
    print(format_table(res, title=f"Held-out evaluation after {args.timesteps:,} steps ({final.env_id}):"))
    print()
    for name in ("ppo (final)", "ppo (best)"):
        gaps = ", ".join(f"{100 * (res.mean(name) / res.mean(e) - 1):+.2f} % vs {e}" for e in experts)
        print(f"{name}: {gaps}")
    print("\nLearning curve (evaluation seeds 10000+, deterministic policy):")
    print(f"{'steps':>10}  {'latency (s)':>12}  {'gap to JMSRA':>13}")
    for row in curve:
        print(f"{row['timesteps']:>10,d}  {row['latency_s']:>12.4f}  {row['gap_to_jmsra_pct']:>12.2f}%")
    print(f"\ntraining: {sps:,.0f} env-steps/s (PPO updates included; BC {info.get('bc', {}).get('wall_s', 0)} s "
          f"not included), {wall:.0f} s wall in all")
    print(f"reference: SB3 PPO on CartPole-v1, 8 envs, CPU: {ref_sps:,.0f} env-steps/s "
          f"-> ratio {sps / ref_sps:.2f}")
    figures = {
        "timesteps": args.timesteps, "env_id": final.env_id, "bc": info.get("bc", {}),
        "action_encoding": info.get("action_encoding"), "held_out_rows": res.rows,
        "gaps_pct": {n: {e: 100 * (res.mean(n) / res.mean(e) - 1) for e in experts} for n in ("ppo (final)", "ppo (best)")},
        "learning_curve": curve, "env_steps_per_s": sps, "cartpole_reference_steps_per_s": ref_sps,
        "wall_s": wall, "run_dir": str(run_dir),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
