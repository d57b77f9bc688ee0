#!/usr/bin/env python
"""Wall time of a 4-trial sweep on Ray Tune (1 CPU per trial) against the same four train.py runs
one after another, and Ray's start-up overhead.

    python benchmarks/bench_sweep.py                       # 4 x 16,384 steps (a few minutes on 2 cores)
    python benchmarks/bench_sweep.py --timesteps 50000

Both sides are timed as a user runs them, each as a fresh process: ``python train.py ...`` four times,
and ``python sweep.py ...`` once (Ray start-up, four trials with their held-out evaluation, the
report). The figure is the ratio sweep / sequential; with 1 CPU per trial, a 2-core machine runs two
trials at a time, so the ideal is ~0.5 plus Ray's overhead. The load average is printed: on a
shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_FLAGS = ["--bc-steps", "0", "--eval-freq", "0", "--checkpoint-freq", "0", "--compare-episodes", "0",
               "--no-progress-bar", "--threads", "1", "--n-envs", "4"]
ENV_IDS = ("jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-N8-v0")
SEEDS = (0, 1)


def _run(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall


def ray_startup_s(num_cpus: int) -> float:
    """ray.init() to a usable local instance (one task round trip), measured in a fresh process."""
    code = (
        "import time; t0 = time.perf_counter(); import ray\n"
        f"ray.init(num_cpus={num_cpus}, include_dashboard=False, log_to_driver=False, logging_level='error')\n"
        "ray.get(ray.remote(lambda: 1).remote()); print(time.perf_counter() - t0); ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timesteps", type=int, default=16_384, help="PPO steps per trial")
    p.add_argument("--startup-repeats", type=int, default=3, help="Ray start-ups to time")
    args = p.parse_args()
    ncpu = os.cpu_count() or 1
    print(f"{ncpu} cores, load average at start {os.getloadavg()[0]:.1f} (shared machine: figures move with it)")

    startups = [ray_startup_s(ncpu) for _ in range(args.startup_repeats)]
    print(f"Ray start-up (fresh process, import + init + one task): "
          f"min {min(startups):.1f} s, median {sorted(startups)[len(startups) // 2]:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        seq = 0.0
        for env_id in ENV_IDS:
            for seed in SEEDS:
                seq += _run([sys.executable, "train.py", "--env-id", env_id, "--seed", str(seed), "--total-timesteps",
                             str(args.timesteps), "--logdir", f"{tmp}/seq", "--run-name", f"{env_id[10:]}-{seed}",
                             *TRAIN_FLAGS])
        print(f"4 x train.py one after another: {seq:.1f} s")
        sweep = _run([sys.executable, "sweep.py", "--env-ids", ",".join(ENV_IDS), "--recipes", "ppo",
                      "--seeds", ",".join(map(str, SEEDS)), "--total-timesteps", str(args.timesteps),
                      # the sweep sets --bc-steps 0 (recipe ppo), --threads 1, --compare-episodes 0 itself
                      "--cpus-per-trial", "1", "--train-args", "--eval-freq 0 --checkpoint-freq 0 --n-envs 4",
                      "--out", f"{tmp}/sweep", "--quiet", "--no-plots"])
        print(f"sweep.py, 4 trials, 1 CPU each (incl. Ray start-up, held-out evaluation, report): {sweep:.1f} s")
        import csv

        with open(f"{tmp}/sweep/report/trials.csv") as fh:
            trials = list(csv.DictReader(fh))
        busy = sum(float(t["train_wall_s"]) + float(t["eval_wall_s"]) for t in trials)
        print(f"  inside the trials: {busy:.1f} s of trial time in all ({busy / seq:.2f}x the sequential runs; "
              f"ideal sweep wall ~ {busy / min(ncpu, 4):.1f} s + start-up)")
    print(f"ratio sweep / sequential: {sweep / seq:.2f}  (target <= ~0.6; ideal on {ncpu} cores ~{1 / min(ncpu, 4):.2f})")
    print(f"Ray start-up / sequential: {min(startups) / seq:.3f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
