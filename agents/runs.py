"""Run directories: naming, creating, locking, replacing (``--force``) and what ``--resume`` continues.

A run directory belongs to one training process at a time: :func:`open_run_dir` and
:func:`lock_run_dir` take an exclusive ``fcntl.flock`` on ``<run dir>/.jmsra_run.lock`` (the file
also marks the directory as a run of this tool and names the holder's pid). The kernel drops the
lock when the process dies, however it dies, so a stale lock of a dead process never blocks.

``--force`` deletes only a directory that is recognisably a run (a ``run.json`` of this format or
the lock file) and that no live process holds. ``--resume <run dir>`` continues from the newest
consistent saved model: the run's top-level model, its best model or a checkpoint, whichever has
the most steps; a unit torn by a kill (:class:`agents.checkpoint.TornModelError`) is passed over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint as ck

__all__ = [
    "LOCK_FILE",
    "RunDirError",
    "RunLock",
    "ResumePoint",
    "default_run_name",
    "check_run_name",
    "is_run_dir",
    "lock_run_dir",
    "open_run_dir",
    "clean_run_dir",
    "find_resume_point",
]

LOCK_FILE = ".jmsra_run.lock"


class RunDirError(ValueError):
    """A run directory cannot be used as asked (exists, is not a run, is held by a live process)."""


class RunLock:
    """An exclusive ``flock`` on a run directory's lock file, held until :meth:`release`."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_dir(run_dir: str | os.PathLike) -> RunLock:
    """Lock ``run_dir`` for this process; :class:`RunDirError` naming the holder if it is in use."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunDirError(
            f"run directory {run_dir} is in use by a live training process ({_holder(path)}); "
            f"wait for it to end or stop it first"
        ) from None
    holder = {"pid": os.getpid(), "host": os.uname().nodename, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return RunLock(run_dir, fd)


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def default_run_name(env_id: str, seed: int) -> str:
    variant = env_id.split("/")[-1].removesuffix("-v0").removesuffix("-Box")
    return f"{variant}-ppo-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise RunDirError(f"--run-name must be a plain directory name (no '/', not '.' or '..'); got {name!r}")


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run directory of this tool (its ``run.json`` or its lock file)."""
    path = Path(path)
    if (path / LOCK_FILE).is_file():
        return True
    try:
        ck.read_run_json(path / ck.RUN_FILE)
    except (FileNotFoundError, ValueError):
        return False
    return True


def open_run_dir(logdir: str | os.PathLike, name: str, force: bool = False) -> RunLock:
    """Create ``<logdir>/<name>`` for a new run and lock it; with ``force`` replace an old run.

    Refuses (:class:`RunDirError`, nothing deleted) when the directory exists without ``force``,
    is not a run of this tool, or is held by a live process.
    """
    check_run_name(name)
    run_dir = Path(logdir) / name
    if run_dir.exists() or run_dir.is_symlink():
        if not force:
            raise RunDirError(f"run directory {run_dir} already exists; pass --force to replace it "
                              f"or --resume {run_dir} to continue it")
        if run_dir.is_symlink() or not run_dir.is_dir() or not is_run_dir(run_dir):
            raise RunDirError(f"--force: {run_dir} is not a run directory of this tool (no {ck.RUN_FILE} "
                              f"or {LOCK_FILE}); refusing to delete it")
        with lock_run_dir(run_dir):  # refuses a live run
            shutil.rmtree(run_dir)
    Path(logdir).mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        raise RunDirError(f"run directory {run_dir} was just created by another process") from None
    return lock_run_dir(run_dir)


def clean_run_dir(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what interrupted saves left behind (call with the lock held); returns what went.

    Temporary files and directories (``.*.tmp``), and a best model torn or incomplete (unusable;
    the next evaluation that beats the recorded best latency, or the first one, saves a new one).
    """
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / ck.CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    best = ck.SavedUnit(run_dir, ck.BEST_PREFIX)
    if best.exists():
        try:
            ck.check_saved_unit(best)
        except (FileNotFoundError, ValueError):
            for name in ck._UNIT_FILES:
                if best.path(name).exists():
                    best.path(name).unlink()
                    removed.append(best.path(name))
    return removed


@dataclass(frozen=True)
class ResumePoint:
    """The saved model a resumed run starts from, and the run it belongs to."""

    run_dir: Path
    unit: ck.SavedUnit
    num_timesteps: int
    run_info: dict = field(repr=False)
    passed_over: tuple[str, ...] = ()  # why newer units were not taken (torn, missing files)


def _run_dir_of(unit_dir: Path) -> Path:
    return unit_dir.parent.parent if unit_dir.parent.name == ck.CHECKPOINT_DIR else unit_dir


def _resume_candidate(unit: ck.SavedUnit) -> ResumePoint:
    ck.check_saved_unit(unit)  # files present, hashes match the manifest
    info = ck.read_run_json(unit.run_path)
    steps = info.get("num_timesteps", 0)
    if unit.policy_path.is_file():
        steps = ck.read_policy_json(unit.policy_path)["num_timesteps"]
    return ResumePoint(_run_dir_of(unit.directory), unit, int(steps), info)


def find_resume_point(path: str | os.PathLike) -> ResumePoint:
    """What ``--resume path`` continues from.

    A checkpoint directory or a ``model.zip``: that saved model (refused if torn). A run
    directory: the newest consistent one of its top-level model, its best model and its
    checkpoints (on a tie the top-level model, then a checkpoint).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no run at {p}: the path does not exist")
    if p.is_file() or p.parent.name == ck.CHECKPOINT_DIR or not (p / ck.CHECKPOINT_DIR).is_dir():
        return _resume_candidate(ck.resolve_unit(p))
    units = [u for u in (ck.SavedUnit(p), ck.SavedUnit(p, ck.BEST_PREFIX)) if u.exists()]
    units += [ck.SavedUnit(d) for d in sorted((p / ck.CHECKPOINT_DIR).iterdir())
              if d.is_dir() and ck._checkpoint_steps(d.name) is not None]
    found, passed = [], []
    for unit in units:
        try:
            found.append(_resume_candidate(unit))
        except (FileNotFoundError, ValueError) as exc:
            passed.append(f"{unit.directory}: {exc}")
    if not found:
        raise FileNotFoundError(f"no consistent saved model in {p}" + "".join(f"\n  {r}" for r in passed))
    newest = max(found, key=lambda r: (r.num_timesteps, r.unit == ck.SavedUnit(p), r.unit.prefix == ""))
    return ResumePoint(newest.run_dir, newest.unit, newest.num_timesteps, newest.run_info, tuple(passed))
