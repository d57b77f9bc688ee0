#!/usr/bin/env python
"""Lost-work fuzz: stop tiny training runs at random moments, then resume them.

Each case starts ``jmsra-train`` (``jmsra_agents.cli_train.main``) on a tiny run that checkpoints and
evaluates every rollout. ``--mode random`` waits a random time and stops it with SIGKILL, SIGTERM,
or two SIGINTs in quick succession (a second Ctrl-C during the save). ``--mode writes`` SIGKILLs
case k at its k-th file write, alternately just before the write (between two files of a saved
model) and half-way through it (the temporary file written, not yet moved into place): every
point of every save is hit. Then ``--resume <run dir>`` must continue from the newest consistent
saved model and finish. Prints: cases tried / recovered (resumed and finished, final model loads safely) / lost
(no resume possible although a model had been saved) / nothing saved yet, and how many stops
landed in a save (a torn unit or a temporary file left behind, detected and passed over).

    python benchmarks/fuzz_kill.py --mode random --cases 24 --parallel 3
    python benchmarks/fuzz_kill.py --mode writes --cases 40 --parallel 3
    python benchmarks/fuzz_kill.py --mode evaluate --cases 12 --parallel 3
    python benchmarks/fuzz_kill.py --mode datasets --cases 12 --parallel 3

``--mode random`` resumes each run to 64 steps past its newest saved model, which a stop in the
middle of a rollout leaves off the rollout grid: the resumed run must end at that target exactly.
``--mode evaluate`` stops ``evaluate.py`` (writing into an ``--out`` that holds an earlier result
set) with SIGKILL, SIGTERM or SIGINT at a random moment: the exit status must be -9 / 143 / 130
(or 0 if it finished), with one line and no traceback; ``--out`` must hold the earlier result set
byte for byte or a complete new one; no staging folder may be left after a signal, and after a
SIGKILL the next evaluation into the same ``--out`` must succeed and remove it. ``--mode
datasets`` SIGKILLs ``collect_dataset`` at a random moment: the dataset's ID must then be free
(no dataset, loading it is a clear ``FileNotFoundError``) or hold the complete dataset, and the
next collection must succeed and leave no temporary folder. These print tried / handled / wrong /
lost.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["--n-envs", "2", "--n-steps", "32", "--batch-size", "64", "--n-epochs", "1", "--net-arch", "16",
        "--bc-steps", "0", "--eval-freq", "64", "--eval-episodes", "1", "--checkpoint-freq", "64",
        "--compare-episodes", "0", "--no-progress-bar", "--device", "cpu"]
STOPS = ("SIGKILL", "SIGTERM", "SIGINTx2")
# SIGKILL at the K-th call of atomic_write_bytes: before it ("torn") or with half the temp file written ("mid")
KILL_AT_WRITE = """
import os, signal, sys, tempfile
from pathlib import Path
import jmsra_agents.checkpoint as ck
k, mode, count, write = int(sys.argv[1]), sys.argv[2], [0], ck.atomic_write_bytes
def killing_write(path, data):
    count[0] += 1
    if count[0] == k:
        if mode == "mid":
            fd, _ = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
            os.write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, data)
ck.atomic_write_bytes = killing_write
from jmsra_agents.cli_train import main
sys.exit(main(sys.argv[3:]))
"""


def _start(logdir: Path, name: str, bc: bool, kill_at: tuple[int, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra = ["--bc-steps", "3000", "--bc-rounds", "2000"] if bc else []
    head = ["-c", KILL_AT_WRITE, str(kill_at[0]), kill_at[1]] if kill_at else ["-m", "jmsra_agents.cli_train"]
    cmd = [sys.executable, *head, "--logdir", str(logdir), "--run-name", name,
           "--total-timesteps", "1000000", *TINY, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen, how: str, rng: np.random.Generator) -> int:
    if how == "SIGKILL":
        proc.kill()
    elif how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=300)
    return proc.returncode


def _inspect(run: Path) -> dict:
    from jmsra_agents import checkpoint as ck
    from jmsra_agents import runs

    state = {"tmp_left": any(p.name.endswith(".tmp") for p in run.rglob("*")), "torn": 0}
    for prefix in ("", ck.BEST_PREFIX):
        unit = ck.SavedUnit(run, prefix)
        if unit.exists():
            try:
                ck.resolve_run_files(unit.model_path)
                ck.check_unit(unit)
            except (FileNotFoundError, ValueError):  # TornModelError included
                state["torn"] += 1
    try:
        state["point"] = runs.find_resume_point(run)
    except (FileNotFoundError, ValueError):
        state["point"] = None
    ckpts = list((run / ck.CHECKPOINT_DIR).glob("ckpt_*_steps")) if (run / ck.CHECKPOINT_DIR).is_dir() else []
    state["saved_anything"] = bool(ckpts) or (run / ck.POLICY_FILE).is_file()
    return state


def _resume(run: Path, point) -> bool:
    from jmsra_agents import checkpoint as ck
    from jmsra_agents.training import resume_spec, train

    target = point.num_timesteps + 64
    result = train(resume_spec(str(run), total_timesteps=target), log=None)
    return (result.status == "final" and result.num_timesteps == target
            and ck.load_trained_policy(run).num_timesteps == target)


def _record(tally: Counter, run: Path, how: str, rc: int) -> None:
    state = _inspect(run)
    expected = {"SIGTERM": 143, "SIGINTx2": 130}.get(how, -9)
    tally["tried"] += 1
    tally["exit codes as documented"] += int(rc == expected)
    tally["stops in a save (torn unit or .tmp left)"] += int(state["torn"] > 0 or state["tmp_left"])
    if state["point"] is None:
        outcome = "lost" if state["saved_anything"] else "nothing saved yet"
    else:
        outcome = "recovered" if _resume(run, state["point"]) else "lost"
    tally[outcome] += 1
    at = f"from {state['point'].num_timesteps} steps" if state["point"] is not None else ""
    print(f"  {run.name:<8} {how:<24} exit {rc:>4}  torn {state['torn']}  tmp {int(state['tmp_left'])}  "
          f"{outcome} {at}", flush=True)


EVAL_ARGS = ["--config", "episode_rounds=16", "--policies", "jmsra,nl-only,kv-only", "--no-progress"]
COLLECT = """
import sys
from jmsra_env.datasets import collect_dataset
collect_dataset("jmsra", n_episodes=int(sys.argv[2]), config={"episode_rounds": 16}, root=sys.argv[1])
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def _evaluate(out: Path, episodes: int, signal_at: float | None, how: str) -> tuple[int, str]:
    cmd = [sys.executable, str(ROOT / "evaluate.py"), "--episodes", str(episodes), "--out", str(out), *EVAL_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if signal_at is not None:
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(f".{out.name}.*.staging")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # start-up (imports) is not what we fuzz
        time.sleep(signal_at)
        if proc.poll() is None:
            proc.send_signal({"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}[how])
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def evaluate_cases(args, rng: np.random.Generator, logdir: Path) -> Counter:
    """evaluate.py stopped at random moments; see the module docstring."""
    from jmsra_env.evaluation import report as rep

    tally: Counter = Counter()
    stops = ("SIGKILL", "SIGTERM", "SIGINT")
    for i in range(args.cases):
        case = logdir / f"eval{i}"
        case.mkdir()
        out = case / "out"
        rc0, err0 = _evaluate(out, 2, None, "")
        if rc0 != 0:
            tally["lost"] += 1
            print(f"  eval{i}: the first evaluation failed: {err0[-300:]}")
            continue
        before = _snapshot(out)
        how = stops[i % len(stops)]
        rc, err = _evaluate(out, 400, float(rng.uniform(0.0, args.max_delay_s)), how)
        problems = []
        expected = {"SIGKILL": -9, "SIGTERM": 143, "SIGINT": 130}[how]
        if rc not in (expected, 0):
            problems.append(f"exit {rc} (expected {expected} or 0)")
        if "Traceback" in err or (how != "SIGKILL" and rc != 0 and len(err.strip().splitlines()) != 1):
            problems.append(f"stderr: {err.strip()[-200:]!r}")
        after = _snapshot(out)
        if after != before:
            complete = set(rep.EVALUATION_FILES) <= set(after) and b"mean_latency_s" in after.get("summary.csv", b"")
            if not complete:
                problems.append(f"--out is neither the old nor a complete new result set: {sorted(after)}")
        staging = list(case.glob(".out.*.staging"))
        if staging and how != "SIGKILL":
            problems.append(f"staging folder left: {staging[0].name}")
        rc2, err2 = _evaluate(out, 1, None, "")  # the next run: works, and cleans what a kill left
        if rc2 != 0 or list(case.glob(".out.*.staging")):
            problems.append(f"the next evaluation: exit {rc2}, staging left {bool(list(case.glob('.out.*.staging')))}")
        tally["tried"] += 1
        tally["wrong" if problems else "handled"] += 1
        tally["finished before the stop"] += int(rc == 0)
        print(f"  eval{i:<3} {how:<8} exit {rc:>4}  {'; '.join(problems) or 'ok'}", flush=True)
    return tally


def dataset_cases(args, rng: np.random.Generator, logdir: Path) -> Counter:
    """collect_dataset SIGKILLed at random moments; see the module docstring."""
    from jmsra_env.datasets import collect_dataset, load_dataset

    tally: Counter = Counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    dataset_id = "jmsra_env/JMSRA-Box/jmsra-v0"
    for i in range(args.cases):
        root = logdir / f"data{i}"
        n = 24
        proc = subprocess.Popen([sys.executable, "-c", COLLECT, str(root), str(n)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while not root.exists() and proc.poll() is None:
            time.sleep(0.01)  # the root appears when the episodes are played and writing starts
        time.sleep(float(rng.uniform(0.0, 2.0)))
        proc.kill()
        proc.communicate(timeout=60)
        problems = []
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = load_dataset(dataset_id, root=root)
                state = "complete"
                if ds.total_episodes != n:
                    problems.append(f"a dataset of {ds.total_episodes} episodes at the ID (asked {n})")
            except FileNotFoundError:
                state = "free"
            except Exception as exc:  # noqa: BLE001
                state = "broken"
                problems.append(f"{type(exc).__name__}: {exc}")
            try:
                collect_dataset("jmsra", n_episodes=2, config={"episode_rounds": 16}, root=root,
                                dataset_id=dataset_id if state == "free" else "jmsra_env/JMSRA-Box/next-v0")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"the next collection: {type(exc).__name__}: {exc}")
        if list(root.glob(".jmsra_collect.*")):
            problems.append("temporary folder left after the next collection")
        tally["tried"] += 1
        tally["wrong" if problems else "handled"] += 1
        tally[f"ID {state} after the kill"] += 1
        print(f"  data{i:<3} SIGKILL  ID {state:<8} {'; '.join(problems) or 'ok'}", flush=True)
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("random", "writes", "evaluate", "datasets"), default="random")
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--parallel", type=int, default=3, help="training processes at once")
    p.add_argument("--max-delay-s", type=float, default=6.0, help="stop within this long after start-up")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import jmsra_env  # noqa: F401 - registers the environments

    rng = np.random.default_rng(args.seed)
    logdir = Path(tempfile.mkdtemp(prefix="fuzz_kill_"))
    tally: Counter = Counter()
    t0 = time.perf_counter()
    if args.mode in ("evaluate", "datasets"):
        tally = (evaluate_cases if args.mode == "evaluate" else dataset_cases)(args, rng, logdir)
        print(f"lost-work fuzz ({args.mode}): {args.cases} cases in {time.perf_counter() - t0:.0f} s ({logdir})")
        tally["lost"] += 0
        for key in ("tried", "handled", "wrong", "lost", *sorted(k for k in tally if k not in
                                                                 ("tried", "handled", "wrong", "lost"))):
            print(f"  {key:<42} {tally[key]}")
        return 0 if tally["wrong"] == 0 and tally["lost"] == 0 else 1
    for lo in range(0, args.cases, args.parallel):
        batch = []
        for i in range(lo, min(lo + args.parallel, args.cases)):
            if args.mode == "writes":
                how, kill_at = f"SIGKILL@write{i + 2}/{'torn' if i % 2 == 0 else 'mid'}", (i + 2, "torn" if i % 2 == 0 else "mid")
            else:
                how, kill_at = STOPS[i % len(STOPS)], None
            batch.append((i, how, _start(logdir, f"case{i}", bc=args.mode == "random" and i % 4 == 3, kill_at=kill_at)))
        if args.mode == "random":
            for i, how, proc in batch:
                while not (logdir / f"case{i}" / "run.json").exists() and proc.poll() is None:
                    time.sleep(0.02)  # start-up (imports) is not what we fuzz
        for i, how, proc in batch:
            if args.mode == "random":
                time.sleep(rng.uniform(0.0, args.max_delay_s / args.parallel))
                rc = _stop(proc, how, rng)
            else:
                rc = proc.wait(timeout=600)
            _record(tally, logdir / f"case{i}", how, rc)
    wall = time.perf_counter() - t0
    print(f"lost-work fuzz ({args.mode}): {args.cases} cases in {wall:.0f} s ({logdir})")
    for key in ("tried", "recovered", "lost", "nothing saved yet", "exit codes as documented",
                "stops in a save (torn unit or .tmp left)"):
        print(f"  {key:<42} {tally[key]}")
    return 0 if tally["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
