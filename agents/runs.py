"""Run directories: naming, creating, locking, replacing (``--force``) and what ``--resume`` continues.

A run directory belongs to one training process at a time: :func:`open_run_dir` and
:func:`lock_run_dir` take an exclusive ``fcntl.flock`` on ``<run dir>/.jmsra_run.lock`` (the file
also marks the directory as a run of this tool and names the holder's pid). The kernel drops the
lock when the process dies, however it dies, so a stale lock of a dead process never blocks.

A directory is a run only if its ``run.json`` is a valid run description
(:func:`jmsra_agents.checkpoint.read_run_json`); marker files alone (an empty ``.jmsra_run.lock``) prove
nothing. ``--force`` replaces only such a directory, that no live process holds, and that holds
nothing but the files a run writes (:data:`RUN_ENTRIES`); anything else in it is named and the
directory is left untouched. The old run is moved aside and deleted only once the new run has
started (:meth:`RunLock.commit`); a failed start puts it back (:meth:`RunLock.abandon`). ``--resume <run dir>`` continues from the newest
consistent saved model: the run's top-level model, its best model or a checkpoint, whichever has
the most steps; a unit torn by a kill (:class:`jmsra_agents.checkpoint.TornModelError`) is passed over.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
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
    "check_logdir",
    "RUN_ENTRIES",
    "lock_run_dir",
    "open_run_dir",
    "clean_run_dir",
    "find_resume_point",
]

LOCK_FILE = ".jmsra_run.lock"


class RunDirError(ValueError):
    """A run directory cannot be used as asked (exists, is not a run, is held by a live process)."""


# What a run directory may hold: everything else is somebody's data, never deleted by --force.
RUN_ENTRIES = frozenset({
    ck.MODEL_FILE, ck.VECNORM_FILE, ck.WEIGHTS_FILE, ck.POLICY_FILE, ck.RUN_FILE, ck.BEST_MODEL_FILE,
    ck.BEST_VECNORM_FILE, ck.BEST_PREFIX + ck.WEIGHTS_FILE, ck.BEST_PREFIX + ck.POLICY_FILE, ck.CHECKPOINT_DIR,
    ck.TRAINER_FILE, ck.BEST_PREFIX + ck.TRAINER_FILE,  # the torch backend's units
    "evaluations.json", "tb", LOCK_FILE,
    "trial_result.json",  # a sweep trial's result (jmsra_agents.sweep.TRIAL_RESULT_FILE)
})


class RunLock:
    """An exclusive ``flock`` on a run directory's lock file, held until :meth:`release`.

    For a new run (:func:`open_run_dir`) it also knows what it created: :meth:`abandon` removes the
    run directory (and the log directories made for it) and puts back a run that ``--force`` moved
    aside; :meth:`commit` deletes that old run once the new one has started.
    """

    def __init__(self, run_dir: Path, fd: int, *, created: list[Path] | None = None, replaced: Path | None = None):
        self.run_dir = run_dir
        self._fd: int | None = fd
        self.created = list(created or [])  # directories this start made (deepest last)
        self.replaced = replaced  # the old run --force moved aside (deleted by commit)

    def commit(self) -> None:
        """The new run has started: delete the run ``--force`` replaced."""
        if self.replaced is not None:
            shutil.rmtree(self.replaced.parent, ignore_errors=True)  # the temporary folder holding it
            self.replaced = None
        self.created = []

    def abandon(self) -> None:
        """The start failed: remove what it created and put back the replaced run."""
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for d in reversed(self.created[:-1]):  # the log directories made for it, if still empty
                try:
                    d.rmdir()
                except OSError:
                    break
        if self.replaced is not None and not self.run_dir.exists():
            _restore(self.replaced, self.run_dir)
        self.replaced = None
        self.created = []

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold_lock_file(path: Path) -> int | None:
    """Take an exclusive ``fcntl.flock`` on ``path`` (created if need be) and write who holds it
    (pid, host, since) into it; the descriptor, or None when another live process holds it. The
    kernel drops the lock when the descriptor is closed or the process ends, however it ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return None
    holder = {"pid": os.getpid(), "host": os.uname().nodename, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


def lock_run_dir(run_dir: str | os.PathLike) -> RunLock:
    """Lock ``run_dir`` for this process; :class:`RunDirError` naming the holder if it is in use."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    fd = hold_lock_file(path)
    if fd is None:
        raise RunDirError(
            f"run directory {run_dir} is in use by a live training process ({lock_holder(path)}); "
            f"wait for it to end or stop it first"
        )
    return RunLock(run_dir, fd)


def lock_holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def _restore(replaced: Path, run_dir: Path) -> None:
    """Put a run that --force moved aside back, and remove the temporary folder that held it."""
    os.replace(replaced, run_dir)
    try:
        replaced.parent.rmdir()
    except OSError:
        pass


def default_run_name(env_id: str, seed: int, algorithm: str = "ppo") -> str:
    variant = env_id.split("/")[-1].removesuffix("-v0").removesuffix("-Box")
    return f"{variant}-{algorithm}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str) -> None:
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name
            or "\0" in name or len(name.encode("utf-8", "surrogateescape")) > 255):
        raise RunDirError(f"--run-name must be a plain directory name (no '/', not '.' or '..', at most 255 bytes); "
                          f"got {name!r:.80}")


def check_logdir(logdir: str | os.PathLike) -> Path:
    """Check, before anything is created, that run directories can be made under ``logdir``:
    it is a directory or can be created (its nearest existing ancestor is a writable directory on a
    filesystem that takes new directories). :class:`RunDirError` naming the path otherwise; nothing
    is left behind (the probe directory is removed)."""
    if not isinstance(logdir, (str, os.PathLike)) or str(logdir) == "" or "\0" in str(logdir):
        raise RunDirError(f"--logdir must be a directory path; got {logdir!r:.80}")
    path = Path(logdir)
    probe_in = path
    while not probe_in.exists():
        if probe_in.is_symlink():
            raise RunDirError(f"--logdir {path}: {probe_in} is a dangling symbolic link")
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        what = "an existing file" if probe_in == path else f"below the file {probe_in}"
        raise RunDirError(f"--logdir {path} is {what}, not a directory")
    try:  # the definitive test: make (and remove) a directory where the run's would go
        probe = Path(tempfile.mkdtemp(prefix=".jmsra_probe.", dir=probe_in))
        probe.rmdir()
    except OSError as exc:
        raise RunDirError(f"--logdir {path}: cannot create directories in {probe_in} ({exc.strerror or exc})") from None
    return path


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run directory of this tool: its ``run.json`` is a valid run description
    (a lock file or other marker alone is not enough)."""
    path = Path(path)
    try:
        ck.read_run_json(path / ck.RUN_FILE)
    except (FileNotFoundError, ValueError):
        return False
    return True


def _only_a_lock(path: Path) -> bool:
    """A start killed before its ``run.json``: the directory holds only an empty or JSON lock file."""
    try:
        entries = list(path.iterdir())
    except OSError:
        return False
    if [p.name for p in entries] != [LOCK_FILE] or not entries[0].is_file() or entries[0].is_symlink():
        return False
    return entries[0].stat().st_size <= 4096


_RUN_FOLDERS = frozenset({ck.CHECKPOINT_DIR, "tb"})


def _foreign_entries(path: Path) -> list[str]:
    """What in ``path`` a run does not write: other names, or a run's name of the wrong kind (a
    folder called ``model.zip``, a file called ``tb``)."""
    out = []
    for p in path.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            continue  # an interrupted save's temporary file or folder
        if p.name not in RUN_ENTRIES or p.is_symlink() or p.is_dir() != (p.name in _RUN_FOLDERS):
            out.append(p.name)
    return sorted(out)


def open_run_dir(logdir: str | os.PathLike, name: str, force: bool = False) -> RunLock:
    """Create ``<logdir>/<name>`` for a new run and lock it; with ``force`` replace an old run.

    Refuses (:class:`RunDirError`, nothing deleted) when the directory exists without ``force``,
    is not a run of this tool (no valid ``run.json``), holds files a run does not write, or is
    held by a live process. The replaced run is moved aside, not deleted: the caller calls
    :meth:`RunLock.commit` once the new run has started, or :meth:`RunLock.abandon` on failure.
    """
    check_run_name(name)
    logdir = check_logdir(logdir)
    run_dir = logdir / name
    replaced = None
    if run_dir.exists() or run_dir.is_symlink():
        if not force:
            raise RunDirError(f"run directory {run_dir} already exists; pass --force to replace it "
                              f"or --resume {run_dir} to continue it")
        if run_dir.is_symlink() or not run_dir.is_dir() or not (is_run_dir(run_dir) or _only_a_lock(run_dir)):
            raise RunDirError(f"--force: {run_dir} is not a run directory of this tool (no valid {ck.RUN_FILE}); "
                              f"refusing to delete it")
        foreign = _foreign_entries(run_dir)
        if foreign:
            raise RunDirError(f"--force: {run_dir} holds files a run does not write ({', '.join(foreign[:5])}"
                              f"{', ...' if len(foreign) > 5 else ''}); refusing to delete it")
        with lock_run_dir(run_dir):  # refuses a live run
            replaced = Path(tempfile.mkdtemp(prefix=f".{name}.replaced.", suffix=".tmp", dir=logdir))
            os.replace(run_dir, replaced / name)
            replaced = replaced / name
    created = []
    for d in reversed([logdir, *logdir.parents]):
        if not d.exists():
            created.append(d)
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        os.mkdir(run_dir)
    except FileExistsError:
        kept = f"; the run --force replaced is kept at {replaced}" if replaced is not None else ""
        raise RunDirError(f"run directory {run_dir} was just created by another process{kept}") from None
    except OSError as exc:
        if replaced is not None and not run_dir.exists():
            _restore(replaced, run_dir)
        raise RunDirError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    created.append(run_dir)
    try:
        lock = lock_run_dir(run_dir)
    except BaseException:
        RunLock(run_dir, -1, created=created, replaced=replaced).abandon()
        raise
    lock.created, lock.replaced = created, replaced
    return lock


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


def finishing(caught: dict, extra_info: dict, interrupted: bool, steps_done: int, learn_s: float, log) -> str:
    """What both training backends do as a run ends, before the last save: name the signal that
    stopped it (SIGINT when none was caught), record the env-steps/s of this session's learning,
    and return the kind of the unit to save (``"interrupted"`` or ``"final"``)."""
    if interrupted:
        if caught["signal"] is None:
            caught["signal"] = signal.SIGINT
        log(f"\ninterrupted ({signal.Signals(caught['signal']).name}): saving the model before exiting ...")
    if learn_s > 0 and steps_done > 0:
        extra_info["env_steps_per_s"] = round(steps_done / learn_s, 1)
    return "interrupted" if interrupted else "final"
