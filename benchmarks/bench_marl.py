"""Decentralised agents: ParallelEnv speed and the decentralised gap.

1. Steps/s of :class:`jmsra_env.multiagent.JMSRAParallelEnv` as a ratio to the single-agent
   :class:`jmsra_env.JMSRAEnv` measured in the same run (same scenario, fixed actions; median of
   interleaved repeats). Target >= 0.5x.
2. Mean latency on held-out rounds of the decentralised yardsticks (``threshold``: single-agent
   threshold on ``B / N``, equal split; ``proportional``: its media, requests proportional to the
   equal-share transmission time), the centralised experts (``jmsra``, ``optimal``) and MAPPO / IPPO
   trained here by the TorchRL reference trainer (:func:`jmsra_agents.marl.train`) with the stated
   budget, or loaded with ``--mappo-run`` / ``--ippo-run`` (a reference run, ``marl.json``, or a run of
   ``train.py --algorithm mappo|ippo``; ``benchmarks/bench_device.py`` part 3 trains those); a
   centralised PPO run of ``train.py`` joins with ``--ppo-run``. Every policy decides on the same
   rounds, charged as the environment charges them (:class:`jmsra_agents.marl.TeamEvaluator`, the one
   evaluation path).
3. ``--session`` (the default session row, ``--scenario JMSRA-Session-v0``): decisions change later
   rounds, so every policy rolls the same ``--episodes`` whole episodes in a session vector env
   (:class:`jmsra_agents.marl.TeamEvaluator`); the centralised rows are the session experts ``jmsra``
   (myopic), ``pool-aware`` and ``lookahead``; MAPPO trains with the session discount (0.9).

    python benchmarks/bench_marl.py                       # default budget (a few minutes on 2 cores)
    python benchmarks/bench_marl.py --frames 0 --mappo-run runs/mappo-JMSRA-v0
    python benchmarks/bench_marl.py --session --algorithms mappo --frames 20480 --bc-steps 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jmsra_env.multiagent import make_team_policy, parallel_env  # noqa: E402


def steps_per_s(step, reset, n: int) -> float:
    reset()
    t = time.perf_counter()
    for _ in range(n):
        if step():
            reset()
    return n / (time.perf_counter() - t)


def speed_ratio(scenario: str, n: int, repeats: int) -> tuple[float, float, float]:
    ma = parallel_env(scenario)
    central = type(ma.central_env)(ma.config)  # JMSRAEnv, or JMSRASessionEnv for a session
    rng = np.random.default_rng(0)
    joint = rng.random((ma.n_agents, 2))
    ma_action = dict(zip(ma.possible_agents, joint.astype(np.float32)))
    c_action = {"media": (joint[:, 0] > 0.5).astype(np.int8), "bandwidth": joint[:, 1].astype(np.float32)}

    def c_step():
        return central.step(c_action)[3]

    def m_step():
        ma.step(ma_action)
        return not ma.agents

    single, multi = [], []
    for _ in range(repeats):
        single.append(steps_per_s(c_step, lambda: central.reset(seed=0), n))
        multi.append(steps_per_s(m_step, lambda: ma.reset(seed=0), n))
    s, m = statistics.median(single), statistics.median(multi)
    return s, m, m / s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="JMSRA-v0")
    p.add_argument("--session", action="store_true", help="the default session: --scenario JMSRA-Session-v0")
    p.add_argument("--episodes", type=int, default=32, help="session episodes of the latency table")
    p.add_argument("--steps", type=int, default=5000, help="steps per speed measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4096, help="held-out rounds of the latency table")
    p.add_argument("--frames", type=int, default=40_960, help="MAPPO / IPPO training frames (0: skip training)")
    p.add_argument("--bc-steps", type=int, default=1500, help="behaviour cloning steps before PPO")
    p.add_argument("--learning-rate", type=float, default=3e-5, help="PPO learning rate (3e-4 without cloning)")
    p.add_argument("--algorithms", default="mappo,ippo")
    p.add_argument("--mappo-run", default=None, help="evaluate this MAPPO run directory instead of training")
    p.add_argument("--ippo-run", default=None)
    p.add_argument("--ppo-run", default=None, help="a centralised train.py run to compare with")
    p.add_argument("--logdir", default="runs/bench_marl")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args(argv)
    if args.session:
        args.scenario = "JMSRA-Session-v0"

    ma = parallel_env(args.scenario)
    cfg = ma.config
    session = cfg.session.enabled
    if not args.skip_speed:
        s, m, r = speed_ratio(args.scenario, args.steps, args.repeats)
        central = type(ma.central_env).__name__
        print(f"steps/s  single-agent {central} {s:,.0f}   ParallelEnv {m:,.0f}   ratio {r:.2f}x (target >= 0.5x)")

    from jmsra_agents.marl import TeamEvaluator

    # the one evaluation path, seeded apart from training (seed 2024 + SELECTION_SEED): whole
    # episodes for a session, rounds drawn once otherwise
    if session:
        evaluator = TeamEvaluator(cfg, args.episodes * cfg.episode_rounds, 2024)
        experts = ("threshold", "proportional", "jmsra", "pool-aware", "lookahead")
        where = f"{args.episodes} held-out episodes x {cfg.episode_rounds} rounds"
    else:
        evaluator = TeamEvaluator(cfg, args.rounds, 2024)
        experts = ("threshold", "proportional", "jmsra", "optimal")
        where = f"{evaluator.episodes * cfg.episode_rounds} held-out rounds"

    deciders = {name: make_team_policy(name, cfg) for name in experts}
    train_s = {}
    for algo in [a for a in args.algorithms.split(",") if a]:
        from jmsra_agents.marl import MARLConfig, load_marl_policy, train

        given = getattr(args, f"{algo}_run")
        if given:
            if (Path(given) / "marl.json").is_file():
                deciders[algo] = load_marl_policy(given)
            else:  # a run of train.py --algorithm mappo|ippo: the safe files
                from jmsra_agents.evaluation import load_model_policy

                deciders[algo] = load_model_policy(given, label=algo)
                deciders[algo].decentralised = True
        elif args.frames > 0:
            hp = MARLConfig(
                algorithm=algo, total_frames=args.frames, bc_steps=args.bc_steps,
                learning_rate=args.learning_rate, checkpoint_every=0, eval_every=5,
            )
            cpu0 = time.process_time()
            out = train(cfg, hp, Path(args.logdir) / f"{algo}-{args.scenario}", device="auto", progress=True)
            train_s[algo] = (out["seconds"], time.process_time() - cpu0, out["device"])
            deciders[algo] = load_marl_policy(Path(args.logdir) / f"{algo}-{args.scenario}")
    if args.ppo_run:  # through the evaluation policy evaluate.py --model uses
        from jmsra_agents.evaluation import load_model_policy

        deciders["ppo (centralised)"] = load_model_policy(args.ppo_run, label="ppo (centralised)")

    means = {}
    for name, policy in deciders.items():
        t0 = time.perf_counter()
        means[name] = evaluator(policy)
        if session:
            print(f"  {name}: {time.perf_counter() - t0:.1f} s")
    ref, thr = means["jmsra"], means["threshold"]
    print(f"\nmean latency on {where} of {args.scenario} (N = {cfg.n_agents})")
    print(f"{'policy':<20} {'kind':<14} {'mean T (s)':>10} {'vs JMSRA':>9} {'vs threshold':>13}")
    for name, v in means.items():
        kind = "decentralised" if getattr(deciders[name], "decentralised", False) else "centralised"
        print(f"{name:<20} {kind:<14} {v:>10.3f} {100 * (v / ref - 1):>+8.1f}% {100 * (v / thr - 1):>+12.1f}%")
    for algo, (wall, cpu, dev) in train_s.items():
        print(f"{algo}: {args.frames:,} frames + {args.bc_steps} behaviour-cloning steps: {wall:.0f} s wall, "
              f"{cpu:.0f} s CPU time, device {dev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
