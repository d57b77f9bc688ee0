"""The SB3 recipe against ``train.py --backend torch`` on the same scenario, in one run.

Measured (every figure of both backends comes from this one process, so ratios hold on a busy
machine even when the absolute figures do not):

1. training throughput: env-steps/s of PPO (no behaviour cloning, no evaluation), SB3 recipe
   (``--n-envs 8 --vec dummy``, its defaults) and the torch backend (its defaults), and the ratio;
2. time to quality: each backend's ``--quick`` recipe (behaviour cloning, then PPO) with a budget of
   ``--sb3-timesteps`` / ``--torch-timesteps``, the wall time (cloning included)
   at which the deterministic policy's gap to JMSRA on the evaluation seeds first reaches
   ``--target-gap-pct``, and the held-out gap of the final policy (``--compare-episodes``
   episodes from seed 20000, never used in training or model selection);
3. the multi-agent trainer (``--algorithm mappo`` / ``ippo``, decentralised agents sharing one
   actor, :mod:`jmsra_agents.torch_marl`) in the same process as part 2's centralised run: its
   throughput in rounds/s (env-steps of the team; every round is ``N`` agent samples), and its
   ``--quick`` recipe with a budget of ``--team-timesteps``: wall time and the held-out gap to JMSRA
   on the same held-out rounds as the centralised row (``--compare-episodes`` from seed 20000);
4. the torch environment alone: env-steps/s with random actions at ``--env-m`` envs (the deadline
   encoding, and the solved one), and on CUDA (when present) at M = 65,536 (the same two, the
   first also compiled) plus the torch backend's PPO env-steps/s there.

Usage::

    python benchmarks/bench_device.py                                # JMSRA-v0, CPU (+ CUDA if present)
    python benchmarks/bench_device.py --env-id jmsra_env/JMSRA-StaleCSI-v0 --target-gap-pct -5
    python benchmarks/bench_device.py --skip-sb3-quality             # SB3 needs minutes to reach the target
    python benchmarks/bench_device.py --only-quality --skip-sb3-quality --team-algorithms mappo,ippo

Figures: docs/training.md ("The torch backend").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jmsra_env  # noqa: E402,F401 - registers the environments
from jmsra_agents.training import train  # noqa: E402

_EVAL = re.compile(r"\[eval @\s*([\d,]+) steps\] latency ([\d.]+) s, gap to JMSRA ([+-][\d.]+) %")


def _run(backend: str, args, logdir: str, name: str, *, bc: bool | str, timesteps: int, eval_freq: int,
         compare: int, n_envs: int | None = None, device: str = "cpu", algorithm: str = "ppo") -> dict:
    """One run of ``train.py [--backend torch] [--quick]`` (each backend's own recipe: with ``bc``
    its --quick cloning, with ``bc="full"`` its default cloning, else none); returns its figures and,
    from its log, when each evaluation ended (wall seconds since the start, cloning included)."""
    from jmsra_agents.cli_train import build_parser, spec_from_args

    argv = ["--env-id", args.env_id, "--seed", str(args.seed), "--threads", str(args.threads), "--logdir", logdir,
            "--run-name", name, "--device", device, "--checkpoint-freq", "0", "--no-progress-bar",
            "--eval-freq", str(eval_freq), "--eval-episodes", str(args.eval_episodes),
            "--compare-episodes", str(compare), "--total-timesteps", str(timesteps),
            *({"full": []}.get(bc, ["--quick"]) if bc else ["--bc-steps", "0"]), *(["--backend", "torch"] if backend == "torch" else []),
            *(["--n-envs", str(n_envs)] if n_envs else []), *(["--algorithm", algorithm] if algorithm != "ppo" else [])]
    parser = build_parser()
    spec = spec_from_args(parser.parse_args(argv), argv, parser)
    t0 = time.perf_counter()
    evals: list[tuple[float, int, float]] = []

    def log(msg: str) -> None:
        m = _EVAL.search(msg)
        if m:
            evals.append((time.perf_counter() - t0, int(m.group(1).replace(",", "")), float(m.group(3))))

    result = train(spec, log=log)
    return {"wall_s": time.perf_counter() - t0, "metrics": result.metrics, "evals": evals,
            "env_steps_per_s": result.metrics.get("env_steps_per_s", float("nan"))}


def _time_to(evals, target: float) -> float | None:
    return next((t for t, _, gap in evals if gap <= target), None)


def _env_steps_per_s(env_id: str, m: int, device: str, seconds: float = 3.0, compile: bool = False,
                     encoding: str = "deadline") -> float:
    import torch

    from jmsra_agents.envs import scenario_config
    from jmsra_agents.torch_ppo import make_torch_vec_env

    env = make_torch_vec_env(env_id, m, scenario_config(env_id), device=device, features="physics",
                             action_encoding=encoding, compile=compile)
    env.reset(seed=0)
    g = torch.Generator(device=device).manual_seed(0)
    for _ in range(3 if compile else 0):  # the compilation, before the clock starts
        env.step(torch.rand((m, env.n_actions), generator=g, device=device) * 2 - 1)
    if device == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(torch.rand((m, env.n_actions), generator=g, device=device) * 2 - 1)
        n += m
    if device == "cuda":
        torch.cuda.synchronize()
    env.close()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="jmsra_env/JMSRA-v0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (both backends; on a shared machine 2 threads ran 10x slower than 1)")
    p.add_argument("--sb3-throughput-steps", type=int, default=16_384)
    p.add_argument("--torch-throughput-steps", type=int, default=262_144)
    p.add_argument("--target-gap-pct", type=float, default=2.0, help="gap to JMSRA on the evaluation seeds (%%)")
    p.add_argument("--torch-timesteps", type=int, default=409_600, help="torch backend's budget in part 2 (--quick)")
    p.add_argument("--sb3-timesteps", type=int, default=100_000, help="SB3 recipe's budget in part 2 (--quick: 40,000)")
    p.add_argument("--eval-episodes", type=int, default=8)
    p.add_argument("--compare-episodes", type=int, default=32, help="held-out episodes (32 x 64 = 2,048 rounds)")
    p.add_argument("--env-m", type=int, default=4096, help="envs of the env-only throughput on the CPU")
    p.add_argument("--skip-sb3-quality", action="store_true", help="part 2 for the torch backend only")
    p.add_argument("--team-algorithms", default="mappo", help="part 3: comma-separated mappo, ippo ('' skips it)")
    p.add_argument("--team-timesteps", type=int, default=1_228_800, help="part 3's PPO budget (rounds)")
    p.add_argument("--team-recipe", choices=("full", "quick"), default="full",
                   help="part 3's cloning: the torch backend's default (1,000 steps on 100,000 rounds) or --quick's")
    p.add_argument("--only-quality", action="store_true", help="parts 2 and 3 only (no throughput runs, no env-only)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out: dict = {"env_id": args.env_id, "threads": args.threads, "cuda": torch.cuda.is_available()}
    logdir = tempfile.mkdtemp(prefix="bench_device_")
    print(f"scenario {args.env_id}; torch {torch.__version__}, {args.threads} CPU threads; runs in {logdir}")

    if args.only_quality:
        return _quality(args, out, logdir)

    # 1. throughput
    sb3 = _run("sb3", args, logdir, "sb3-throughput", bc=False, timesteps=args.sb3_throughput_steps, eval_freq=0,
               compare=0)
    tch = _run("torch", args, logdir, "torch-throughput", bc=False, timesteps=args.torch_throughput_steps,
               eval_freq=0, compare=0)
    out["throughput"] = {"sb3_env_steps_per_s": sb3["env_steps_per_s"], "torch_env_steps_per_s": tch["env_steps_per_s"],
                         "ratio": tch["env_steps_per_s"] / sb3["env_steps_per_s"]}
    print(f"\n1. PPO training throughput (no cloning, no evaluation), CPU:\n"
          f"   sb3 recipe (8 envs):            {sb3['env_steps_per_s']:>10,.0f} env-steps/s\n"
          f"   torch backend (1,024 envs):     {tch['env_steps_per_s']:>10,.0f} env-steps/s"
          f"   = {out['throughput']['ratio']:.1f}x sb3")

    _quality(args, out, logdir, sb3["env_steps_per_s"], tch)

    # 4. the environment alone
    box = args.env_id.replace("-v0", "-Box-v1") if "-Box-" not in args.env_id else args.env_id
    cpu_env = _env_steps_per_s(box, args.env_m, "cpu")
    cpu_solved = _env_steps_per_s(box, args.env_m, "cpu", encoding="solved")
    out["env_only"] = {"cpu_m": args.env_m, "cpu_env_steps_per_s": cpu_env, "cpu_solved_env_steps_per_s": cpu_solved}
    print(f"\n4. torch env alone (features + deadline decoding, random actions), CPU, M = {args.env_m:,}: "
          f"{cpu_env:,.0f} env-steps/s = {cpu_env / tch['env_steps_per_s']:.1f}x the torch backend's PPO; "
          f"with the solved encoding ((P2) by NumPy on the host): {cpu_solved:,.0f} env-steps/s")
    if torch.cuda.is_available():
        gpu_env = _env_steps_per_s(box, 65_536, "cuda")
        gpu_solved = _env_steps_per_s(box, 65_536, "cuda", encoding="solved")
        gpu_env_compiled = _env_steps_per_s(box, 65_536, "cuda", compile=True)
        gpu = _run("torch", args, logdir, "torch-cuda", bc=False, timesteps=16 * 65_536, eval_freq=0, compare=0,
                   n_envs=65_536, device="cuda")
        out["cuda"] = {"env_steps_per_s_m65536": gpu_env, "env_steps_per_s_m65536_compiled": gpu_env_compiled,
                       "solved_env_steps_per_s_m65536": gpu_solved,
                       "ppo_env_steps_per_s": gpu["env_steps_per_s"]}
        print(f"   CUDA ({torch.cuda.get_device_name()}): env M = 65,536: {gpu_env:,.0f} env-steps/s "
              f"({gpu_env_compiled:,.0f} with compile=True, {gpu_solved:,.0f} with the solved encoding's "
              f"(P2) on the device); PPO (M = 65,536): "
              f"{gpu['env_steps_per_s']:,.0f} env-steps/s = {gpu['env_steps_per_s'] / sb3['env_steps_per_s']:.0f}x sb3 (CPU)")
    else:
        print("   no CUDA device: the GPU figures (M = 65,536) are not measured")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def _quality(args, out: dict, logdir: str, sb3_sps: float | None = None, tch: dict | None = None) -> int:
    """Parts 2 and 3: each recipe's time to the target gap and its held-out gap (same rounds for all)."""
    # 2. time to a gap
    out["quality"] = {}
    print(f"\n2. wall time (cloning included) to a gap to JMSRA <= {args.target_gap_pct:+.1f} % on the evaluation "
          f"seeds; held-out gap on {args.compare_episodes} episodes:")
    for backend in ("torch", "sb3"):
        if backend == "sb3" and args.skip_sb3_quality:
            continue
        steps = args.torch_timesteps if backend == "torch" else args.sb3_timesteps
        freq = max(steps // 10, 1)
        r = _run(backend, args, logdir, f"{backend}-quality", bc=True, timesteps=steps, eval_freq=freq,
                 compare=args.compare_episodes)
        reach = _time_to(r["evals"], args.target_gap_pct)
        held = r["metrics"].get("compare/ppo_gap_to_jmsra_pct", float("nan"))
        out["quality"][backend] = {"time_to_target_s": reach, "wall_s": r["wall_s"], "held_out_gap_pct": held,
                                   "timesteps": steps, "evals": r["evals"]}
        reached = f"{reach:6.1f} s" if reach is not None else f"not within {steps:,} steps"
        print(f"   {backend:<6} reached: {reached}; whole run {r['wall_s']:.1f} s; held-out gap {held:+.2f} %")
    q = out["quality"]
    if all(q.get(b, {}).get("time_to_target_s") for b in ("sb3", "torch")):
        print(f"   time-to-target ratio sb3 / torch: {q['sb3']['time_to_target_s'] / q['torch']['time_to_target_s']:.1f}x")

    # 3. the multi-agent trainer, on the same held-out rounds as the centralised row
    team = [a for a in args.team_algorithms.split(",") if a]
    if team:
        steps = args.team_timesteps
        print(f"\n3. multi-agent trainer (decentralised agents, one shared actor; torch backend, {args.team_recipe} "
              f"cloning, {steps:,} rounds of PPO): held-out gap on the same {args.compare_episodes} episodes")
        out["team"] = {}
        for algo in team:
            thr = None
            if not args.only_quality:
                t = _run("torch", args, logdir, f"{algo}-throughput", bc=False, timesteps=args.torch_throughput_steps,
                         eval_freq=0, compare=0, algorithm=algo)
                thr = t["env_steps_per_s"]
            r = _run("torch", args, logdir, f"{algo}-quality", bc="full" if args.team_recipe == "full" else True,
                     timesteps=steps, eval_freq=max(steps // 10, 1), compare=args.compare_episodes, algorithm=algo)
            held = r["metrics"].get(f"compare/{algo}_gap_to_jmsra_pct", float("nan"))
            out["team"][algo] = {"rounds_per_s": thr, "wall_s": r["wall_s"], "held_out_gap_pct": held,
                                 "timesteps": steps, "evals": r["evals"],
                                 "learn_rounds_per_s": r["metrics"].get("env_steps_per_s")}
            thr_s = f"{thr:,.0f} rounds/s without cloning and evaluation" + (
                f" ({thr / tch['env_steps_per_s']:.2f}x the centralised torch PPO)" if tch else "") if thr else ""
            print(f"   {algo:<6} held-out gap {held:+.2f} %; whole run {r['wall_s']:.1f} s "
                  f"({r['metrics'].get('env_steps_per_s', float('nan')):,.0f} rounds/s in PPO){'; ' + thr_s if thr_s else ''}")
        central = out["quality"].get("torch", {}).get("held_out_gap_pct")
        if central is not None:
            print(f"   centralised torch PPO on the same rounds: {central:+.2f} %")
    if args.only_quality and args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
