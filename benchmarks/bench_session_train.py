#!/usr/bin/env python
"""Benchmark: train PPO on a session scenario (``JMSRA-Session-v0``), then roll held-out episodes.

The recipe is ``train.py``'s session default (docs/training.md, "Training on sessions"): gamma
0.9, physics + session features, the deadline action encoding, behaviour cloning from the
``lookahead`` expert rolled through whole episodes, then PPO fine-tuning with ``--vec native``.

Prints (and with ``--out`` writes as JSON):

* held-out evaluation (episodes from seed 30000, never used for training or model selection),
  whole episodes rolled for every policy on the same exogenous rounds: mean latency per round and
  evictions per episode of PPO (final and best model), myopic JMSRA, NL-only, pool-aware and
  lookahead, and PPO's gap to each (ratios measured in this run);
* the learning curve: mean latency on the model-selection episodes (seed 10000+) against
  environment steps, with its gap to JMSRA and to pool-aware (step 0 = after behaviour cloning);
* training throughput in env-steps/s.

``--wall-s`` stops PPO (SIGTERM to itself: the model is saved) after that many seconds of the whole
run, so a fixed wall budget gives the largest step count that fits; the figures say how many steps ran.

Usage::

    python benchmarks/bench_session_train.py --timesteps 300000 --out runs/bench_session.json   # the docs figures
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELD_OUT_SEED = 30_000
EXPERTS = ("jmsra", "nl-only", "pool-aware", "lookahead")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env-id", default="jmsra_env/JMSRA-Session-v0")
    p.add_argument("--timesteps", type=int, default=300_000)
    p.add_argument("--wall-s", type=float, default=0.0, help="stop PPO after this many seconds of the run (0 = none)")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--vec", default="native")
    p.add_argument("--bc-steps", type=int, default=5_000)
    p.add_argument("--bc-rounds", type=int, default=None, help="default: train.py's session default")
    p.add_argument("--bc-expert", default=None, help="default: train.py's session default (lookahead)")
    p.add_argument("--eval-freq", type=int, default=100_000)
    p.add_argument("--eval-episodes", type=int, default=32)
    p.add_argument("--episodes", type=int, default=200, help="held-out episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--logdir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jmsra_env  # noqa: F401 - registers the IDs
    from jmsra_agents import training as t
    from jmsra_agents.checkpoint import load_trained_policy
    from jmsra_agents.evaluation import TrainedModelPolicy, compare_with_experts, format_table

    logdir = args.logdir or tempfile.mkdtemp(prefix="bench_session_train_")
    spec = t.TrainSpec(
        env_id=args.env_id, total_timesteps=args.timesteps, n_envs=args.n_envs, vec=args.vec, seed=args.seed,
        threads=args.threads, logdir=logdir, run_name="ppo", force=True, bc_steps=args.bc_steps,
        bc_rounds=args.bc_rounds or t.SESSION_BC_ROUNDS, bc_expert=args.bc_expert, checkpoint_freq=0,
        eval_freq=args.eval_freq, eval_episodes=args.eval_episodes, compare_episodes=0, progress_bar=False,
    )
    t0 = time.perf_counter()
    if args.wall_s > 0:
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        signal.alarm(int(args.wall_s))
    result = t.train(spec, log=lambda m: print(m, flush=True))
    signal.alarm(0)
    train_s = time.perf_counter() - t0
    run = json.loads((result.run_dir / "run.json").read_text())
    curve = json.loads((result.run_dir / "evaluations.json").read_text())["evaluations"] \
        if (result.run_dir / "evaluations.json").is_file() else []

    policies = []
    for label, name in (("ppo", "model.zip"), ("ppo-best", "best_model.zip")):
        path = result.run_dir / name
        if path.is_file():
            trained = load_trained_policy(path, trust_pickle=True)
            policies.append(TrainedModelPolicy(trained, trained.config, label))
    t1 = time.perf_counter()
    res = compare_with_experts(args.env_id, {}, policies, experts=EXPERTS, episodes=args.episodes,
                               seed=HELD_OUT_SEED, reference="jmsra")
    eval_s = time.perf_counter() - t1
    print("\n" + format_table(res, title=f"Held-out episodes ({args.env_id}, {args.episodes} episodes, seed "
                                         f"{HELD_OUT_SEED}+), whole episodes rolled per policy:"))
    rows = {}
    for r in res.results:
        ev_ep = float(r.info["evictions"].sum() / r.episodes) if "evictions" in (r.info or {}) else float("nan")
        rows[r.label] = {"mean_latency_s": res.mean(r.label), "evictions_per_episode": ev_ep}
    print(f"\n{'policy':<11} {'latency [s]':>11} {'evictions/ep':>12} {'PPO vs it':>10}")
    for label, row in rows.items():
        vs = 100.0 * (rows["ppo"]["mean_latency_s"] / row["mean_latency_s"] - 1.0)
        print(f"{label:<11} {row['mean_latency_s']:>11.4f} {row['evictions_per_episode']:>12.3f} {vs:>+9.2f}%")
    print(f"\nlearning curve (selection episodes, seed 10000+, {args.eval_episodes} episodes):")
    print(f"{'steps':>9} {'latency [s]':>11} {'vs jmsra':>9} {'vs pool-aware':>13}")
    for c in curve:
        pa = c.get("pool-aware_latency_s")
        print(f"{c['timesteps']:>9,d} {c['latency_s']:>11.4f} {c['gap_to_jmsra_pct']:>+8.2f}%"
              + (f" {100 * (c['latency_s'] / pa - 1):>+12.2f}%" if pa else ""))
    sps = run.get("env_steps_per_s", float("nan"))
    print(f"\nbudget: {result.num_timesteps:,} PPO env steps ({result.status}), BC {run.get('bc', {})}, "
          f"{sps} env-steps/s, train {train_s:.0f} s, held-out evaluation {eval_s:.0f} s")
    if args.out:
        out = {"env_id": args.env_id, "num_timesteps": result.num_timesteps, "status": result.status,
               "env_steps_per_s": sps, "bc": run.get("bc", {}), "ppo": run.get("ppo", {}), "train_s": train_s,
               "eval_s": eval_s, "episodes": args.episodes, "rows": rows, "curve": curve,
               "table": format_table(res)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2, default=float))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
