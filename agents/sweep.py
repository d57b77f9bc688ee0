"""Multi-seed, multi-scenario sweeps on Ray Tune: scenarios x recipes x hyperparameters x seeds.

Each cell of the grid is one Ray Tune trial (a function trainable). A trial trains with the
project's training entry point (:func:`train_step`, today ``train.py``'s ``main`` in-process), so
its run directory has ``train.py``'s format (``evaluate.py --model RUN_DIR`` works on any of them),
then evaluates the final model on held-out rounds with :mod:`jmsra_env.evaluation`
(:func:`eval_step`). The report (:mod:`jmsra_agents.sweep_report`) aggregates the per-seed results with
rliable's statistics (IQM, stratified-bootstrap intervals, probability of improvement).

Ray starts in-process on the local machine by default (the embedded mode); ``address`` connects to
an existing cluster. An interrupted sweep resumes with ``tune.Tuner.restore``: finished trials are
not run again.

Layout of a sweep's output folder::

    OUT/grid.json           the grid (what --resume reads back)
    OUT/resources.json      CPUs and GPUs per trial (--resume reuses them unless given again)
    OUT/runs/<trial>/       one train.py run directory per trial
    OUT/tune/sweep/         Ray Tune's experiment state (what Tuner.restore reads)
    OUT/report/             the report (written atomically: temp folder + rename)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import shlex
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jmsra_env import evaluation as ev

from .evaluation import load_model_policy
from .runs import RunDirError, check_logdir, hold_lock_file, lock_holder

__all__ = [
    "SweepError",
    "RECIPES",
    "GRID_KEYS",
    "SweepGrid",
    "TrialCell",
    "TrialResult",
    "parse_seeds",
    "load_grid_file",
    "grid_from_mapping",
    "validate_grid",
    "train_argv",
    "train_step",
    "eval_step",
    "run_trial",
    "run_sweep",
    "build_parser",
    "main",
]

# Recipe -> train.py flags. "ppo": pure RL; "bc+ppo": train.py's default behaviour-cloning warm start
# from JMSRA, then PPO fine-tuning. A later recipe (e.g. multi-agent) is one more entry here.
RECIPES: dict[str, tuple[str, ...]] = {
    "ppo": ("--bc-steps", "0"),
    "bc+ppo": (),
}
# Keys of a grid file (TOML); anything else is refused.
GRID_KEYS = ("env_ids", "recipes", "seeds", "hyperparams", "total_timesteps", "train_args",
             "eval_episodes", "eval_seed")
# train.py flags the sweep sets itself per trial: refused in train_args and hyperparams.
_SWEEP_SET = ("env_id", "seed", "logdir", "run_name", "force", "resume", "total_timesteps", "quick")
# Held-out evaluation: train.py's final-comparison seeds (training seeds its envs from 0, model
# selection uses 10000..), so the sweep's numbers are comparable with train.py's and evaluate.py's.
DEFAULT_EVAL_SEED = 20_000
DEFAULT_EVAL_EPISODES = 16  # train.py's --compare-episodes default
DEFAULT_TOTAL_TIMESTEPS = 200_000
# Scalars copied from each trial's TensorBoard log into its result (learning curves).
CURVE_TAGS = ("rounds/latency_s", "rounds/gap_to_jmsra_pct", "eval/latency_s", "eval/gap_to_jmsra_pct")
GRID_FILE = "grid.json"
RESOURCES_FILE = "resources.json"  # per-trial resources of the latest session (what --resume reuses)
EXPERIMENT_NAME = "sweep"
LOCK_FILE = ".jmsra_sweep.lock"  # held (fcntl.flock) by the sweep's process for its lifetime
# Limits of a grid (docs/sweeps.md): beyond them a value is a typo, refused before Ray starts.
MAX_GRID_FILE_BYTES = 1024 * 1024
MAX_SEEDS = 10_000  # seeds of one grid ("0..100000000" is refused, not expanded)
MAX_SEED = 2**31 - 1  # train.py's --seed limit
MAX_TRIALS = 10_000  # cells of one grid (scenarios x recipes x hyperparameter sets x seeds)
MAX_EVAL_EPISODES = 100_000
MAX_TOTAL_TIMESTEPS = 10**12
MAX_BOOTSTRAP_REPS = 1_000_000


class SweepError(ValueError):
    """Bad sweep input (grid file, flag, output folder); the message names the problem."""


# ---------------------------------------------------------------------------------------------
# The grid


def parse_seeds(spec: str | int | Sequence[int | str]) -> tuple[int, ...]:
    """Seeds from ``"0..9"`` (inclusive range), ``"0,3,7"``, ``"0..3,8"``, an int or a list of those."""
    if isinstance(spec, bool):
        raise SweepError(f"seeds: expected integers or ranges like '0..9'; got {spec!r}")
    if isinstance(spec, int):
        parts: list[Any] = [spec]
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    elif isinstance(spec, Sequence):
        parts = list(spec)
    else:
        raise SweepError(f"seeds: expected a list or a string like '0..9'; got {spec!r}")
    if len(parts) > MAX_SEEDS:
        raise SweepError(f"seeds: {len(parts):,} entries; at most {MAX_SEEDS:,} seeds per sweep")
    seeds: list[int] = []
    for part in parts:
        if isinstance(part, bool):
            raise SweepError(f"seeds: {part!r} is not an integer")
        if isinstance(part, int):
            lo = hi = part
        else:
            m = re.fullmatch(r"\s*(\d{1,30})\s*(?:\.\.\s*(\d{1,30})\s*)?", str(part)) if isinstance(part, str) else None
            if m is None:
                raise SweepError(f"seeds: {str(part)[:60]!r} is neither an integer >= 0 nor a range like '0..9'")
            lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise SweepError(f"seeds: empty range {part!r} (the end is below the start)")
        if lo < 0:
            raise SweepError(f"seeds: must be >= 0; got {lo}")
        if hi > MAX_SEED:
            raise SweepError(f"seeds: {hi} is above the largest seed train.py takes ({MAX_SEED:,})")
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
            raise SweepError(f"seeds: {part!r} makes more than {MAX_SEEDS:,} seeds; at most {MAX_SEEDS:,} per sweep")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise SweepError("seeds: the seed list is empty; give at least one seed, e.g. '0..4'")
    counts = Counter(seeds)
    twice = sorted(s for s, n in counts.items() if n > 1)
    if twice:
        raise SweepError(f"seeds: listed twice: {twice[:10]}{' ...' if len(twice) > 10 else ''}")
    return tuple(seeds)


@dataclass(frozen=True)
class SweepGrid:
    """Scenarios x recipes x hyperparameter values (cartesian product) x seeds, plus shared settings."""

    env_ids: tuple[str, ...]
    recipes: tuple[str, ...] = ("ppo",)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # train.py flag (dest form, e.g. "learning_rate") -> values; each combination is a variant
    hyperparams: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    total_timesteps: int = DEFAULT_TOTAL_TIMESTEPS
    train_args: tuple[str, ...] = ()  # further train.py flags, the same for every trial
    eval_episodes: int = DEFAULT_EVAL_EPISODES
    eval_seed: int = DEFAULT_EVAL_SEED

    def cells(self) -> list[TrialCell]:
        """Every trial, scenario-major, then recipe, hyperparameters, seed."""
        names = [k for k, _ in self.hyperparams]
        combos = list(itertools.product(*[v for _, v in self.hyperparams])) or [()]
        return [
            TrialCell(env_id, recipe, seed, tuple(zip(names, combo)), self.total_timesteps, self.train_args,
                      self.eval_episodes, self.eval_seed)
            for env_id in self.env_ids for recipe in self.recipes for combo in combos for seed in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyperparams"] = {k: list(v) for k, v in self.hyperparams}
        return d


@dataclass(frozen=True)
class TrialCell:
    """One trial: what to train (scenario, recipe, hyperparameters, seed) and how to evaluate it."""

    env_id: str
    recipe: str
    seed: int
    hyperparams: tuple[tuple[str, Any], ...] = ()
    total_timesteps: int = DEFAULT_TOTAL_TIMESTEPS
    train_args: tuple[str, ...] = ()
    eval_episodes: int = DEFAULT_EVAL_EPISODES
    eval_seed: int = DEFAULT_EVAL_SEED

    @property
    def scenario(self) -> str:
        """The variant name of the env ID, e.g. ``JMSRA-N8`` (Dict and Box IDs share it)."""
        from jmsra_env.registration import variant_of

        return variant_of(self.env_id)[0]

    @property
    def variant(self) -> str:
        """Recipe and hyperparameters: the row label of the report, e.g. ``ppo learning_rate=0.0003``."""
        return " ".join([self.recipe, *(f"{k}={_value_text(v)}" for k, v in self.hyperparams)])

    @property
    def name(self) -> str:
        """The trial's (and its run directory's) name: ``<scenario>-<recipe>[-<k>=<v>...]-seed<seed>``."""
        hp = "".join(f"-{k}={_value_text(v)}" for k, v in self.hyperparams)
        return re.sub(r"[^A-Za-z0-9._+=-]", "_", f"{self.scenario}-{self.recipe}{hp}-seed{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hyperparams"] = [[k, v] for k, v in self.hyperparams]
        d["train_args"] = list(self.train_args)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialCell:
        d = dict(d)
        d["hyperparams"] = tuple((k, v) for k, v in d.get("hyperparams", ()))
        d["train_args"] = tuple(d.get("train_args", ()))
        return cls(**d)


def _value_text(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class TrialResult:
    """What a trial reports: its run directory and the held-out evaluation of its final model."""

    name: str
    env_id: str
    scenario: str
    recipe: str
    variant: str
    seed: int
    run_dir: str
    mean_latency_s: float  # mean E2E latency per round on the held-out rounds
    episode_latency_s: tuple[float, ...]  # per held-out episode
    kv_share: float
    capped_rate: float
    num_timesteps: int
    train_wall_s: float
    eval_wall_s: float
    # TensorBoard scalars: tag -> ((step, value), ...)
    curves: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["episode_latency_s"] = list(self.episode_latency_s)
        d["curves"] = {k: [list(p) for p in v] for k, v in self.curves.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialResult:
        names = cls.__dataclass_fields__.keys()
        d = {k: v for k, v in d.items() if k in names}
        d["episode_latency_s"] = tuple(float(x) for x in d["episode_latency_s"])
        d["curves"] = {k: tuple((int(s), float(v)) for s, v in pts) for k, pts in d.get("curves", {}).items()}
        return cls(**d)


def load_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping of a TOML grid file (validated by :func:`grid_from_mapping`): UTF-8, at most
    :data:`MAX_GRID_FILE_BYTES`; every failure is a :class:`SweepError` naming the file."""
    p = Path(path)
    try:
        if p.is_dir():
            raise SweepError(f"grid file {str(p)!r} is a folder, not a TOML file")
        with open(p, "rb") as fh:
            data = fh.read(MAX_GRID_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SweepError(f"grid file {str(p)!r} does not exist") from None
    except OSError as exc:
        raise SweepError(f"grid file {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_GRID_FILE_BYTES:
        raise SweepError(f"grid file {str(p)!r} is larger than {MAX_GRID_FILE_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SweepError(f"grid file {str(p)!r} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                         f"TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"grid file {str(p)!r} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SweepError(f"grid file {str(p)!r} nests too deeply") from None


def _str_list(key: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{key}: expected a list of strings; got {str(value)[:80]!r}")
    if len(value) > MAX_TRIALS:
        raise SweepError(f"{key}: {len(value):,} entries; at most {MAX_TRIALS:,}")
    if not value and not allow_empty:
        raise SweepError(f"{key}: the list is empty")
    if any("\0" in v for v in value):
        raise SweepError(f"{key}: a value holds a NUL character")
    return tuple(value)


def _int(key: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"{str(value)[:12]}..."
        raise SweepError(f"{key}: expected an integer in [{minimum:,}, {maximum:,}]; got {shown}")
    return value


def _hp_value(key: str, v: Any) -> Any:
    """One hyperparameter value: a finite number or a string (what becomes one train.py flag)."""
    import math

    if isinstance(v, bool):
        return v  # train.py's --flag / --no-flag options take true / false
    if isinstance(v, int):
        if abs(v) > 2**63:
            raise SweepError(f"hyperparams.{key}: {str(v)[:12]}... is too large")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise SweepError(f"hyperparams.{key}: {v!r} is not a finite number")
        return v
    if isinstance(v, str):
        if "\0" in v or len(v) > 1000:
            raise SweepError(f"hyperparams.{key}: {v[:40]!r} is not a usable value (NUL or over 1,000 characters)")
        if v.strip().lower() in ("nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"):
            raise SweepError(f"hyperparams.{key}: {v!r} is not a finite number")
        return v
    raise SweepError(f"hyperparams.{key}: expected numbers or strings; got {type(v).__name__} {str(v)[:40]!r}")


def _split_train_args(value: str) -> tuple[str, ...]:
    if "\0" in value:
        raise SweepError("train_args: holds a NUL character")
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:  # an unterminated quote
        raise SweepError(f"train_args: cannot split {value[:80]!r} into flags: {exc}") from None


def grid_from_mapping(raw: Mapping[str, Any], *, where: str = "grid") -> SweepGrid:
    """A :class:`SweepGrid` from a grid file's mapping; unknown keys and bad values are refused."""
    unknown = sorted(set(raw) - set(GRID_KEYS))
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown}; known keys: {list(GRID_KEYS)}")
    if "env_ids" not in raw:
        raise SweepError(f"{where}: 'env_ids' is missing (the scenarios to sweep)")
    kw: dict[str, Any] = {"env_ids": _str_list("env_ids", raw["env_ids"])}
    if "recipes" in raw:
        kw["recipes"] = _str_list("recipes", raw["recipes"])
    if "seeds" in raw:
        kw["seeds"] = parse_seeds(raw["seeds"])
    if "hyperparams" in raw:
        hp = raw["hyperparams"]
        if not isinstance(hp, Mapping):
            raise SweepError(f"hyperparams: expected a table of name = [values]; got {hp!r}")
        items = []
        for k, v in hp.items():
            values = tuple(v) if isinstance(v, (list, tuple)) else (v,)
            if not values:
                raise SweepError(f"hyperparams.{k}: the list of values is empty")
            if len(values) > MAX_TRIALS:
                raise SweepError(f"hyperparams.{k}: {len(values):,} values; at most {MAX_TRIALS:,} trials per sweep")
            values = tuple(_hp_value(str(k), x) for x in values)
            items.append((str(k).replace("-", "_"), values))
        kw["hyperparams"] = tuple(items)
    if "total_timesteps" in raw:
        kw["total_timesteps"] = _int("total_timesteps", raw["total_timesteps"], 1, MAX_TOTAL_TIMESTEPS)
    if "train_args" in raw:
        ta = raw["train_args"]
        kw["train_args"] = _split_train_args(ta) if isinstance(ta, str) else _str_list("train_args", ta, allow_empty=True)
    if "eval_episodes" in raw:
        kw["eval_episodes"] = _int("eval_episodes", raw["eval_episodes"], 1, MAX_EVAL_EPISODES)
    if "eval_seed" in raw:
        kw["eval_seed"] = _int("eval_seed", raw["eval_seed"], 0, MAX_SEED)
    return SweepGrid(**kw)


def validate_grid(grid: SweepGrid) -> list[TrialCell]:
    """Check every cell against the registry and train.py's parser; return the cells.

    Runs before Ray starts, so a bad grid fails before any trial does.
    """
    from jmsra_env.registration import ENV_IDS, SESSION_ENV_IDS, variant_of

    for env_id in grid.env_ids:
        try:
            variant_of(env_id)
        except ValueError:
            raise SweepError(f"env_ids: unknown environment id {env_id!r}; registered: {[*ENV_IDS, *SESSION_ENV_IDS]}") from None
    if len(set(grid.env_ids)) != len(grid.env_ids) or len({variant_of(e)[0] for e in grid.env_ids}) != len(grid.env_ids):
        raise SweepError(f"env_ids: a scenario is listed twice (a Dict ID and its Box twin are one scenario): "
                         f"{list(grid.env_ids)}")
    for recipe in grid.recipes:
        if recipe not in RECIPES:
            raise SweepError(f"recipes: unknown recipe {recipe!r}; known: {list(RECIPES)}")
    if len(set(grid.recipes)) != len(grid.recipes):
        raise SweepError(f"recipes: listed twice: {list(grid.recipes)}")
    if not grid.seeds:
        raise SweepError("seeds: the seed list is empty; give at least one seed, e.g. '0..4'")

    parser = _train_parser()
    dests = {a.dest for a in parser._actions}
    for k, values in grid.hyperparams:
        if k not in dests or k == "help":
            raise SweepError(f"hyperparams: {k!r} is not a train.py flag; see python train.py --help")
        if k in _SWEEP_SET:
            raise SweepError(f"hyperparams: {k!r} is set by the sweep itself (one per trial)")
    given = {t.split("=", 1)[0].lstrip("-").replace("-", "_") for t in grid.train_args if t.startswith("--")}
    clash = sorted(given & set(_SWEEP_SET))
    if clash:
        raise SweepError(f"train_args: {clash} are set by the sweep itself (env_ids, seeds, total_timesteps, "
                         f"the run directory); remove them")
    clash = sorted(given & {k for k, _ in grid.hyperparams})
    if clash:
        raise SweepError(f"train_args: {clash} are swept in hyperparams too; give them in one place")

    n_trials = len(grid.env_ids) * len(grid.recipes) * len(grid.seeds)
    for _, values in grid.hyperparams:
        n_trials *= len(values)
    if n_trials > MAX_TRIALS:
        raise SweepError(f"the grid has {n_trials:,} trials; at most {MAX_TRIALS:,} per sweep")
    cells = grid.cells()
    seen: dict[str, TrialCell] = {}
    checked: set[tuple[str, ...]] = set()
    for cell in cells:
        if cell.name in seen:
            raise SweepError(f"two trials share the name {cell.name!r}; make the hyperparameter values distinct")
        seen[cell.name] = cell
        argv = train_argv(cell, Path("/nonexistent"))
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(argv)
        except SystemExit:
            msg = err.getvalue().strip().splitlines()
            raise SweepError(f"trial {cell.name}: train.py refuses its flags: {msg[-1] if msg else argv}") from None
        key = tuple(a for i, a in enumerate(argv) if i == 0 or argv[i - 1] not in ("--seed", "--run-name"))
        if key not in checked:  # trials that differ only in their seed share these checks
            checked.add(key)
            _check_train_values(parser, argv, cell)
        if cell.recipe == "ppo" and dict(cell.hyperparams).get("bc_steps", 0) not in (0, "0"):
            raise SweepError("hyperparams: bc_steps conflicts with recipe 'ppo' (no behaviour cloning)")
    return cells


def _check_train_values(parser: argparse.ArgumentParser, argv: list[str], cell: TrialCell) -> None:
    """train.py's own checks of a trial's flags (ranges, NaN / inf, size limits, scenario, expert),
    as ``train()`` makes them, without its run directory (which does not exist yet)."""
    from . import training

    cli = _train_module()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
        training.check_values({k: v for k, v in vars(args).items() if v is not None})
        spec = cli.spec_from_args(args, argv, parser)
        training.validate_spec(spec, check_paths=False)
    except (training.TrainSpecError, ValueError, TypeError) as exc:
        raise SweepError(f"trial {cell.name}: train.py refuses its flags: {exc}") from None


# ---------------------------------------------------------------------------------------------
# One trial: train, then evaluate. Two small adapters, so either entry point can be swapped.


def _train_module():
    """The training command line (``jmsra_agents.cli_train``: ``build_parser`` and ``main``)."""
    from . import cli_train

    return cli_train


def _train_parser() -> argparse.ArgumentParser:
    return _train_module().build_parser()


def train_argv(cell: TrialCell, run_dir: Path, *, threads: int = 1) -> list[str]:
    """train.py's command line for ``cell``, writing its run directory at ``run_dir``."""
    argv = ["--env-id", cell.env_id, "--seed", str(cell.seed), "--total-timesteps", str(cell.total_timesteps),
            "--logdir", str(run_dir.parent), "--run-name", run_dir.name, "--force",
            "--no-progress-bar", "--compare-episodes", "0"]
    if not any(a == "--threads" or a.startswith("--threads=") for a in cell.train_args):
        argv += ["--threads", str(max(1, threads))]
    argv += list(RECIPES[cell.recipe])
    for k, v in cell.hyperparams:
        argv += [f"--{k.replace('_', '-')}", _value_text(v)]
    return argv + list(cell.train_args)


def train_step(cell: TrialCell, run_dir: Path, *, threads: int = 1) -> None:
    """Train ``cell`` into ``run_dir`` (train.py's format). Adapter: swap for jmsra_agents.training.train."""
    argv = train_argv(cell, run_dir, threads=threads)
    try:
        rc = _train_module().main(argv)
    except SystemExit as exc:  # train.py's own checks after parsing (parser.error)
        raise RuntimeError(f"train.py refused trial {cell.name} (exit status {exc.code}); see why with: "
                           f"python train.py {shlex.join(argv)}") from None
    if rc != 0:
        raise RuntimeError(f"train.py exited with status {rc} for trial {cell.name}")


def eval_step(cell: TrialCell, run_dir: Path) -> dict[str, Any]:
    """Held-out evaluation of ``run_dir``'s final model on ``cell.eval_episodes`` episodes from
    ``cell.eval_seed`` (the very episodes the report charges the experts on), by the one evaluation
    path of ``evaluate.py`` (:func:`jmsra_env.evaluation.evaluate_scenario`): a single-round
    scenario's rounds are drawn and charged, a session model is rolled on whole episodes."""
    cfg, _ = ev.scenario_from_env_id(cell.env_id)
    policy = load_model_policy(run_dir, label=cell.recipe)
    ev.check_policy_fits(policy, cfg)
    (res,) = ev.evaluate_scenario(cfg, [policy], cell.eval_episodes, cell.eval_seed, single_round_budget_s=0.0)
    return {
        "mean_latency_s": float(res.latency_s.mean()),
        "episode_latency_s": tuple(float(x) for x in res.latency_s.reshape(res.episodes, -1).mean(axis=1)),
        "kv_share": float(np.mean(res.media)),
        "capped_rate": float(np.mean(res.capped)),
        "num_timesteps": int(policy.trained.num_timesteps),
    }


def read_scalars(run_dir: str | os.PathLike, tags: Sequence[str] = CURVE_TAGS) -> dict[str, tuple[tuple[int, float], ...]]:
    """TensorBoard scalars of a run directory: tag -> ((step, value), ...), sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted((Path(run_dir) / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag in tags:
                out.setdefault(tag, {}).update({int(e.step): float(e.value) for e in acc.Scalars(tag)})
    return {tag: tuple(sorted(points.items())) for tag, points in out.items()}


TRIAL_RESULT_FILE = "trial_result.json"  # in a trial's run directory, written last


def _finished_trial(cell: TrialCell, run_dir: Path) -> TrialResult | None:
    """The result a finished trial of ``cell`` left in ``run_dir``, or None.

    Tune may re-run a trial that finished just as the sweep was interrupted (its completion not yet
    in the saved experiment state); the trial then returns what it already computed instead of
    training again."""
    path = run_dir / TRIAL_RESULT_FILE
    try:
        saved = json.loads(path.read_text())
        result = TrialResult.from_dict(saved["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if saved.get("cell") == json.loads(json.dumps(cell.to_dict())) else None


def run_trial(cell: TrialCell, run_dir: Path, *, threads: int = 1) -> TrialResult:
    """Train ``cell`` into ``run_dir``, evaluate it on held-out rounds, read its learning curves.

    Idempotent: a trial that already finished in ``run_dir`` returns its saved result."""
    done = _finished_trial(cell, run_dir)
    if done is not None:
        return done
    result = _train_and_evaluate(cell, run_dir, threads=threads)
    from jmsra_env.evaluation.report import atomic_write

    atomic_write(run_dir / TRIAL_RESULT_FILE, json.dumps({"cell": cell.to_dict(), "result": result.to_dict()}))
    return result


def _train_and_evaluate(cell: TrialCell, run_dir: Path, *, threads: int) -> TrialResult:
    t0 = time.perf_counter()
    train_step(cell, run_dir, threads=threads)
    t1 = time.perf_counter()
    metrics = eval_step(cell, run_dir)
    t2 = time.perf_counter()
    return TrialResult(
        name=cell.name, env_id=cell.env_id, scenario=cell.scenario, recipe=cell.recipe, variant=cell.variant,
        seed=cell.seed, run_dir=str(run_dir), train_wall_s=round(t1 - t0, 3), eval_wall_s=round(t2 - t1, 3),
        curves=read_scalars(run_dir), **metrics,
    )


# ---------------------------------------------------------------------------------------------
# Ray Tune


def _tune_trainable(config: dict[str, Any]) -> None:
    """The function trainable: one cell in, one final result reported."""
    from ray import tune

    cell = TrialCell.from_dict(config["cell"])
    result = run_trial(cell, Path(config["runs_dir"]) / cell.name, threads=int(config.get("threads", 1)))
    tune.report({"trial_result": json.dumps(result.to_dict()), "mean_latency_s": result.mean_latency_s})


def _trial_name(trial) -> str:
    return TrialCell.from_dict(trial.config["cell"]).name if "cell" in trial.config else str(trial)


def _trainable_with_resources(cpus: float, gpus: float):
    from ray import tune

    return tune.with_resources(_tune_trainable, {"cpu": cpus, "gpu": gpus})


def _stop_after_callback(n: int):
    """A Tune callback that interrupts the sweep (as Ctrl-C does: state saved, resumable) once ``n``
    trials finished in this session."""
    import signal

    from ray.tune import Callback

    class StopAfter(Callback):
        def __init__(self):
            self.done = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            if self.done == n:
                # Tune's own interrupt handler (installed for SIGINT and SIGUSR1 in the main thread)
                # saves the experiment state and ends fit(); Tuner.restore continues it. Without that
                # handler (fit() outside the main thread) SIGUSR1 would kill the process: do nothing.
                if signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                    os.kill(os.getpid(), signal.SIGUSR1)

    return StopAfter()


def _init_ray(address: str | None, num_cpus: int | None, num_gpus: float | None, working_dir: str | None) -> bool:
    """Start (or connect to) Ray unless it is up already; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": "warning"}
    if working_dir is not None:
        kw["runtime_env"] = {"working_dir": working_dir, "excludes": ["runs/", "results/", "sweeps/", ".git/"]}
    if address is not None:
        ray.init(address=address, **kw)  # the cluster's resources; no local-only options
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=False, **kw)
    return True


@dataclass(frozen=True)
class SweepOutcome:
    """Every trial's result (None for a trial that did not finish) and the errors by trial name."""

    cells: list[TrialCell]
    results: dict[str, TrialResult]
    errors: dict[str, str]
    wall_s: float

    @property
    def complete(self) -> bool:
        return len(self.results) == len(self.cells)


def run_sweep(
    grid: SweepGrid,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int = 0,
    stop_after: int | None = None,
    verbose: int = 1,
) -> SweepOutcome:
    """Run (or, with ``resume``, continue) the grid's trials on the Ray instance that is up.

    ``out`` must be absolute; the trials write ``out/runs/<trial>`` and Tune its state under
    ``out/tune``. ``stop_after`` interrupts the sweep once that many trials finished (resumable).
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact trial table (CLIReporter) below
    from ray import tune

    out = Path(out)
    cells = grid.cells()
    reporter = tune.CLIReporter(
        parameter_columns={"cell/recipe": "recipe", "cell/seed": "seed"},
        metric_columns={"mean_latency_s": "latency [s]"}, max_report_frequency=30,
    )
    storage = out / "tune"
    trainable = _trainable_with_resources(cpus_per_trial, gpus_per_trial)
    callbacks = [_stop_after_callback(stop_after)] if stop_after else []
    t0 = time.perf_counter()
    if resume and not tune.Tuner.can_restore(str(storage / EXPERIMENT_NAME)):
        resume = False  # interrupted before Tune saved any state: start the grid afresh
    if resume:
        tuner = tune.Tuner.restore(str(storage / EXPERIMENT_NAME), trainable, resume_errored=True)
        # The callbacks of a restored run are those of the original RunConfig; set this session's.
        run_config = tuner._local_tuner._run_config  # noqa: SLF001 - no public setter
        run_config.callbacks, run_config.progress_reporter, run_config.verbose = callbacks, reporter, verbose
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={
                "cell": tune.grid_search([c.to_dict() for c in cells]),
                "runs_dir": str(out / "runs"),
                "threads": max(1, int(cpus_per_trial)),
            },
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent or None,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
                reuse_actors=True,  # one actor (and one torch import) serves trial after trial
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT_NAME, storage_path=str(storage), verbose=verbose, callbacks=callbacks,
                progress_reporter=reporter,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    grid_results = tuner.fit()
    results: dict[str, TrialResult] = {}
    errors: dict[str, str] = {}
    for r in grid_results:
        name = TrialCell.from_dict(r.config["cell"]).name if r.config and "cell" in r.config else "?"
        if r.error is not None:
            errors[name] = f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1] if str(r.error).strip() else ''}"
        elif r.metrics and "trial_result" in r.metrics:
            results[name] = TrialResult.from_dict(json.loads(r.metrics["trial_result"]))
    return SweepOutcome(cells, results, errors, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep.py",
        description="Run a grid of training runs (scenarios x recipes x hyperparameters x seeds) as Ray Tune "
        "trials, evaluate each on held-out rounds, and report IQM with stratified-bootstrap intervals "
        "(rliable) per scenario against JMSRA, NL-only and KV-only.",
        epilog="A grid file (TOML) has the keys " + ", ".join(GRID_KEYS) + "; flags override it. "
        "See docs/sweeps.md.",
    )
    g = p.add_argument_group("grid (flags override the grid file)")
    g.add_argument("--grid", metavar="FILE", help="TOML grid file")
    g.add_argument("--env-ids", metavar="IDS", help="comma-separated registered IDs, e.g. jmsra_env/JMSRA-v0")
    g.add_argument("--recipes", metavar="NAMES", help=f"comma-separated: {', '.join(RECIPES)} (default ppo)")
    g.add_argument("--seeds", metavar="SPEC", help="e.g. 0..9, 0,3,7 or 0..3,8 (default 0..4)")
    g.add_argument("--hp", metavar="NAME=V,V", action="append", default=[],
                   help="hyperparameter values to sweep (train.py flag name), e.g. learning_rate=3e-4,1e-4 or "
                   "net_arch='64,64;256,256' (';' separates values that hold commas); repeatable")
    g.add_argument("--total-timesteps", type=int, default=None, help=f"per trial (default {DEFAULT_TOTAL_TIMESTEPS:,})")
    g.add_argument("--train-args", default=None, metavar="'FLAGS'",
                   help="further train.py flags for every trial, e.g. '--n-envs 4 --net-arch 64,64'")
    g.add_argument("--eval-episodes", type=int, default=None,
                   help=f"held-out episodes per trial and for the experts (default {DEFAULT_EVAL_EPISODES})")
    g.add_argument("--eval-seed", type=int, default=None, help=f"first held-out episode seed (default {DEFAULT_EVAL_SEED})")
    g = p.add_argument_group("execution")
    g.add_argument("--out", required=True, help="output folder of the sweep (runs, Tune state, report)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep in --out (its grid.json); finished trials are kept")
    g.add_argument("--address", default=None, help="Ray cluster: 'auto' or 'ray://HOST:10001' (default: start Ray "
                   "in-process on this machine)")
    g.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs to use (default: all cores)")
    g.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs per trial, fractions allowed (default 1; --resume: the sweep's own)")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial, fractions allowed (default 0; --resume: the sweep's own)")
    g.add_argument("--max-concurrent", type=int, default=0, help="at most this many trials at once (0: as resources allow)")
    g.add_argument("--working-dir", default=None,
                   help="ship this folder to the cluster's workers (Ray runtime_env working_dir), e.g. the checkout")
    g.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="interrupt the sweep once N trials finished in this session (resume later with --resume)")
    g.add_argument("--report-only", action="store_true", help="write the report from the finished trials in --out")
    g = p.add_argument_group("report")
    g.add_argument("--bootstrap-reps", type=int, default=10_000, help="stratified-bootstrap resamples")
    g.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap (same seed, same report)")
    g.add_argument("--no-plots", action="store_true", help="no PNG figures")
    g.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return p


def _grid_from_args(args) -> SweepGrid:
    raw: dict[str, Any] = dict(load_grid_file(args.grid)) if args.grid else {}
    where = f"grid file {args.grid!r}" if args.grid else "grid"
    if args.grid and "env_ids" in raw:
        grid_from_mapping(raw, where=where)  # the file's own errors first, named as the file's
    elif args.grid:
        unknown = sorted(set(raw) - set(GRID_KEYS))
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {unknown}; known keys: {list(GRID_KEYS)}")
    if args.env_ids is not None:
        raw["env_ids"] = args.env_ids
    if args.recipes is not None:
        raw["recipes"] = args.recipes
    if args.seeds is not None:
        raw["seeds"] = args.seeds
    if args.hp:
        hp = dict(raw.get("hyperparams", {}))
        for item in args.hp:
            name, sep, values = item.partition("=")
            if not sep or not name.strip() or not values.strip():
                raise SweepError(f"--hp: expected NAME=V,V,...; got {item!r}")
            sep = ";" if ";" in values else ","  # net_arch=64,64;256,256: values that hold commas
            hp[name.strip()] = [_parse_value(v) for v in values.split(sep) if v.strip()]
        raw["hyperparams"] = hp
    for key in ("total_timesteps", "train_args", "eval_episodes", "eval_seed"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if "env_ids" not in raw:
        raise SweepError("no scenarios: give --env-ids or env_ids in a --grid file")
    return grid_from_mapping(raw, where=where)


def _parse_value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _grid_from_json(path: Path) -> SweepGrid:
    from .safe_files import load_json_file

    try:
        raw = load_json_file(path, "sweep grid")
    except FileNotFoundError:
        raise SweepError(f"--resume: no sweep in {str(path.parent)!r} ({GRID_FILE} is missing)") from None
    except ValueError as exc:
        raise SweepError(f"--resume: {exc}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: must be a JSON object (a sweep's grid); got {type(raw).__name__}")
    return grid_from_mapping(raw, where=str(path))


def _resources(args, out: Path) -> None:
    """Per-trial resources: the flags, else (on --resume) the sweep's saved ones, else 1 CPU, 0 GPU."""
    saved: dict[str, Any] = {}
    if args.resume and (out / RESOURCES_FILE).exists():
        from .safe_files import load_json_file

        try:
            saved = load_json_file(out / RESOURCES_FILE, "sweep resources")
        except (OSError, ValueError) as exc:
            raise SweepError(f"--resume: {exc}") from None
        if not isinstance(saved, dict):
            raise SweepError(f"{out / RESOURCES_FILE}: must be a JSON object; got {type(saved).__name__}")
    for key, default in (("cpus_per_trial", 1.0), ("gpus_per_trial", 0.0)):
        if getattr(args, key) is None:
            value = saved.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SweepError(f"{out / RESOURCES_FILE}: field {key} must be a number; got {value!r:.40}")
            setattr(args, key, float(value))


def _check_args(args) -> None:
    import math

    for name in ("cpus_per_trial", "gpus_per_trial"):
        if not math.isfinite(getattr(args, name)):
            raise SweepError(f"--{name.replace('_', '-')} must be a finite number; got {getattr(args, name)}")
    if not 0 < args.cpus_per_trial <= 4096:
        raise SweepError(f"--cpus-per-trial must be in (0, 4096]; got {args.cpus_per_trial}")
    if not 0 <= args.gpus_per_trial <= 1024:
        raise SweepError(f"--gpus-per-trial must be in [0, 1024]; got {args.gpus_per_trial}")
    if not 0 <= args.max_concurrent <= MAX_TRIALS:
        raise SweepError(f"--max-concurrent must be in [0, {MAX_TRIALS:,}]; got {args.max_concurrent}")
    if args.stop_after is not None and not 1 <= args.stop_after <= MAX_TRIALS:
        raise SweepError(f"--stop-after must be in [1, {MAX_TRIALS:,}]; got {args.stop_after}")
    if args.stop_after is not None and not hasattr(__import__("signal"), "SIGUSR1"):
        raise SweepError("--stop-after needs SIGUSR1 (POSIX); stop with Ctrl-C instead")
    if not 100 <= args.bootstrap_reps <= MAX_BOOTSTRAP_REPS:
        raise SweepError(f"--bootstrap-reps must be in [100, {MAX_BOOTSTRAP_REPS:,}]; got {args.bootstrap_reps}")
    if not 0 <= args.bootstrap_seed <= 2**32 - 1:
        raise SweepError(f"--bootstrap-seed must be in [0, 2**32 - 1]; got {args.bootstrap_seed}")
    if args.num_cpus is not None and (not 1 <= args.num_cpus <= 4096 or args.address is not None):
        raise SweepError("--num-cpus must be in [1, 4096] and is for a local Ray instance (not with --address)")
    if (args.resume or args.report_only) and (args.grid or args.env_ids or args.recipes or args.seeds or args.hp):
        raise SweepError("--resume / --report-only read the grid from --out; do not give grid flags")


def _check_out(args) -> Path:
    """``--out``: a path; for a new sweep a folder that does not exist yet, is empty, or holds only
    a sweep lock; for ``--resume`` / ``--report-only`` a sweep of this tool (its ``grid.json``).
    Checked before anything is created (the folder's place must be writable)."""

    if not args.out or "\0" in args.out:
        raise SweepError(f"--out must be a folder path; got {args.out!r:.60}")
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {str(out)!r} exists and is not a folder")
    if not (args.resume or args.report_only):
        if (out / GRID_FILE).exists():
            raise SweepError(f"--out {str(out)!r} holds a sweep already; pass --resume to continue it "
                             f"or choose another folder")
        if out.is_dir():
            foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
            if foreign:
                raise SweepError(f"--out {str(out)!r} is not empty and is not a sweep of this tool (it holds "
                                 f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give a new or "
                                 f"empty folder")
        try:
            check_logdir(out)
        except RunDirError as exc:
            raise SweepError(str(exc).replace("--logdir", "--out")) from None
    return out


def _lock_out(out: Path) -> int:
    """Hold ``out/.jmsra_sweep.lock`` (``fcntl.flock``) for the sweep's lifetime; the kernel drops it
    when the process ends, however it ends. :class:`SweepError` when another sweep holds it."""
    fd = hold_lock_file(out / LOCK_FILE)
    if fd is None:
        raise SweepError(
            f"--out {str(out)!r} is in use by a running sweep ({lock_holder(out / LOCK_FILE)}); wait for it to end"
        )
    return fd


def _outcome_from_state(out: Path, grid: SweepGrid) -> SweepOutcome:
    """The finished trials recorded in Tune's state, without running anything (for --report-only)."""
    from ray import tune

    analysis = tune.ExperimentAnalysis(str(out / "tune" / EXPERIMENT_NAME))
    results = {}
    for trial in analysis.trials:
        last = trial.last_result or {}
        if "trial_result" in last:
            r = TrialResult.from_dict(json.loads(last["trial_result"]))
            results[r.name] = r
    return SweepOutcome(grid.cells(), results, {}, 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; exit status 0 (report written), 2 (bad input), 1 (failed trials), 130 (interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        out = _check_out(args)
        _resources(args, out)
        _check_args(args)
        if args.resume or args.report_only:
            grid = _grid_from_json(out / GRID_FILE)
        else:
            grid = _grid_from_args(args)
        cells = validate_grid(grid)
    except SweepError as exc:
        print(f"sweep.py: error: {exc}", file=sys.stderr)
        return 2

    held: dict[str, int] = {}
    try:
        return _execute(args, out, grid, cells, held)
    finally:
        if "fd" in held:
            os.close(held["fd"])  # the sweep's lock, released when everything is written


def _execute(args, out: Path, grid: SweepGrid, cells: list[TrialCell], held: dict[str, int]) -> int:
    from . import sweep_report

    if args.report_only:
        outcome = _outcome_from_state(out, grid)
    else:
        from jmsra_env.evaluation.report import atomic_write

        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
            held["fd"] = _lock_out(out)
            if not args.resume and (out / GRID_FILE).exists():  # another sweep got here first
                raise SweepError(f"--out {str(out)!r} holds a sweep already; pass --resume to continue it")
        except (SweepError, OSError) as exc:
            print(f"sweep.py: error: {exc}", file=sys.stderr)
            return 2
        try:
            started = _init_ray(args.address, args.num_cpus, None, args.working_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to start or reach Ray, in one line
            where = f"connect to Ray at {args.address!r}" if args.address else "start Ray"
            print(f"sweep.py: error: cannot {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
            if created:  # a failed start leaves nothing behind
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            return 2
        print(f"sweep: {len(cells)} trials ({len(grid.env_ids)} scenarios x {len(grid.recipes)} recipes x "
              f"{len(cells) // (len(grid.env_ids) * len(grid.recipes) * len(grid.seeds))} hyperparameter sets x "
              f"{len(grid.seeds)} seeds) -> {out}")
        try:
            if not args.resume:
                atomic_write(out / GRID_FILE, json.dumps(grid.to_dict(), indent=2) + "\n")
            resources = {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial}
            atomic_write(out / RESOURCES_FILE, json.dumps(resources, indent=2) + "\n")
            outcome = run_sweep(
                grid, out, resume=args.resume, cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                stop_after=args.stop_after, verbose=0 if args.quiet else 1,
            )
        finally:
            if started:
                import ray

                ray.shutdown()
        print(f"sweep: {len(outcome.results)}/{len(cells)} trials finished ({outcome.wall_s:.0f} s in this session)")
        for name, err in outcome.errors.items():
            print(f"  failed: {name}: {err}", file=sys.stderr)
        if not outcome.complete:
            print(f"resume with: sweep.py --resume --out {out}", file=sys.stderr)
            return 1 if outcome.errors else 130
    files = sweep_report.build_report(
        outcome.cells, outcome.results, reps=args.bootstrap_reps, seed=args.bootstrap_seed, plots=not args.no_plots,
    )
    sweep_report.write_report(out / "report", files)
    print(sweep_report.terminal_summary(files))
    print(f"report: {out / 'report'} ({', '.join(sorted(files))})")
    return 0
