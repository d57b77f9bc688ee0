"""The run-directory format of a training run, atomic saving, and loading a trained policy.

Format (``RUN_FORMAT = "jmsra_env.run/2"``; ``/1`` runs, without the safe files, still load)
--------------------------------------------------------------------------------------------

``train.py`` (:func:`jmsra_agents.training.train`) writes one directory per run,
``<logdir>/<run-name>/``::

    model.zip  vecnormalize.pkl     SB3 PPO model + its VecNormalize statistics (pickles; resume)
    policy.safetensors              the same policy's weights (safe format, no pickle)
    policy.json                     architecture, normalisation statistics, run metadata, and the
                                    SHA-256 of the three files above (the unit's manifest)
    run.json                        what the run was (below)
    best_model.zip ...              the best model of the periodic evaluation: best_vecnormalize.pkl,
                                    best_policy.safetensors, best_policy.json (one more unit)
    checkpoints/ckpt_<steps>_steps/ every K steps: one unit + run.json, renamed into place whole
    evaluations.json                the periodic evaluation's learning curve
    tb/                             TensorBoard event files (``tensorboard --logdir <run dir>/tb``)
    .jmsra_run.lock                 the run's lock (:mod:`jmsra_agents.runs`) and marker

A *saved model* is one unit: ``<prefix>model.zip``, ``<prefix>vecnormalize.pkl``,
``<prefix>policy.safetensors`` and ``<prefix>policy.json`` (prefix ``""`` or ``"best_"``). The
files are written one by one (each to a temporary name, then ``os.replace``) and
``policy.json`` last: it holds the step count and the hashes of the other three, so a unit torn by
a kill (new model next to old statistics) is detected at load and refused with a
:class:`TornModelError`. A checkpoint is filled in a temporary directory and renamed whole.
Saving defers SIGINT / SIGTERM (:func:`deferred_signals`): a second Ctrl-C waits for the save.

``run.json`` holds: ``format``; ``env_id`` (the SB3-ready Box ID trained on) and
``requested_env_id``; ``config`` (the env's ``ScenarioConfig.to_dict()``, rebuilt with
:func:`jmsra_env.make_config`); ``action_form`` (``"box"``); ``n_agents``; ``features`` (the
:mod:`jmsra_agents.features` set); ``obs_pipeline`` (``"features -> VecNormalize.normalize_obs"``);
``action_encoding`` (:mod:`jmsra_agents.encoding`: how the network's output becomes the env's Box
action); ``args`` (the training spec); ``ppo`` (the :class:`jmsra_agents.ppo.PPOConfig`); ``versions``
(package versions); ``num_timesteps`` (steps trained when this file was written);
``total_timesteps``; ``kind`` (``final``, ``checkpoint``, ``interrupted``, ``running``).

Loading
-------

:func:`load_trained_policy` takes a run directory, a checkpoint directory, a ``*model.zip`` or a
``*policy.json`` file and returns a :class:`TrainedPolicy` whose ``predict`` accepts RAW
environment observations (one Dict observation or a batch of them) and applies the saved feature
transform and normalisation. By default it reads only the safe files (JSON + safetensors: nothing
is unpickled, so a crafted file cannot run code) and rebuilds the actor network in torch; its
deterministic actions equal the SB3 model's exactly. ``trust_pickle=True`` loads the SB3 pickles
instead (needed for runs older than the safe format); do that only for files you trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jmsra_env.evaluation.report import atomic_write

from .safe_files import (
    check_actor_header,
    check_finite_tensors,
    field_error,
    load_json_file,
    read_safetensors_header,
    validate_architecture,
    validate_normalization,
    validate_policy_info,
)

__all__ = [
    "RUN_FORMAT",
    "POLICY_FORMAT",
    "MODEL_FILE",
    "VECNORM_FILE",
    "POLICY_FILE",
    "WEIGHTS_FILE",
    "RUN_FILE",
    "BEST_PREFIX",
    "BEST_MODEL_FILE",
    "BEST_VECNORM_FILE",
    "CHECKPOINT_DIR",
    "TornModelError",
    "SavedUnit",
    "TrainedPolicy",
    "load_trained_policy",
    "resolve_unit",
    "check_unit",
    "resolve_run_files",
    "read_run_json",
    "atomic_write_bytes",
    "deferred_signals",
    "save_model_files",
    "save_checkpoint",
    "write_unit",
    "fill_checkpoint",
    "check_saved_unit",
    "unit_backend",
    "TRAINER_FILE",
    "TORCH_UNIT_FILES",
    "checkpoint_name",
    "package_versions",
]

RUN_FORMAT = "jmsra_env.run/2"  # /2: every saved model has its manifest (policy.json)
LEGACY_RUN_FORMATS = ("jmsra_env.run/1",)
POLICY_FORMAT = "jmsra_env.policy/1"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
POLICY_FILE = "policy.json"
WEIGHTS_FILE = "policy.safetensors"
RUN_FILE = "run.json"
BEST_PREFIX = "best_"
BEST_MODEL_FILE = BEST_PREFIX + MODEL_FILE
BEST_VECNORM_FILE = BEST_PREFIX + VECNORM_FILE
CHECKPOINT_DIR = "checkpoints"
# The torch backend's unit (jmsra_agents.torch_ppo): no pickle at all. trainer.safetensors holds what
# resuming needs beyond the policy (critic, optimiser, normalisation statistics, generator state).
TRAINER_FILE = "trainer.safetensors"
TORCH_UNIT_FILES = (WEIGHTS_FILE, TRAINER_FILE)
_UNIT_FILES = (MODEL_FILE, VECNORM_FILE, WEIGHTS_FILE, POLICY_FILE, TRAINER_FILE)


class TornModelError(ValueError):
    """The files of one saved model do not belong together (a save was interrupted)."""


# ---------------------------------------------------------------------------------------------
# Signals during a save

_defer = threading.local()


@contextlib.contextmanager
def deferred_signals(redeliver: bool = True) -> Iterator[None]:
    """Hold SIGINT / SIGTERM while the block runs (a save), then deliver the first one caught.

    Outside the main thread (signals cannot be handled there) this does nothing. Re-entrant.
    With ``redeliver=False`` the held signals are dropped (the caller is exiting anyway).
    """
    if threading.current_thread() is not threading.main_thread() or getattr(_defer, "depth", 0) > 0:
        _defer.depth = getattr(_defer, "depth", 0) + 1
        try:
            yield
        finally:
            _defer.depth -= 1
        return
    pending: list[int] = []

    def hold(signum, frame):  # noqa: ARG001 - signal handler signature
        pending.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, hold)
    _defer.depth = 1
    try:
        yield
    finally:
        _defer.depth = 0
        for s, handler in old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if pending and redeliver:
            signal.raise_signal(pending[0])


# ---------------------------------------------------------------------------------------------
# Atomic writing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`jmsra_env.evaluation.report.atomic_write`)."""
    atomic_write(path, data)


def _model_bytes(model) -> bytes:
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (Path, type)):
        return str(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Mapping):
        return dict(o)
    return repr(o)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The safe format: weights in safetensors, the rest in JSON

_ACTIVATION_NAMES = {"ReLU": "relu", "Tanh": "tanh", "ELU": "elu", "SiLU": "silu"}


def _architecture(policy) -> dict[str, Any]:
    """The actor of an SB3 ``ActorCriticPolicy`` (flatten -> ``mlp_extractor.policy_net`` -> ``action_net``)."""
    import torch.nn as nn

    layers: list[dict[str, Any]] = []
    for m in policy.mlp_extractor.policy_net:
        if isinstance(m, nn.Linear):
            layers.append({"linear": [m.in_features, m.out_features]})
        elif type(m).__name__ in _ACTIVATION_NAMES:
            layers.append({"activation": _ACTIVATION_NAMES[type(m).__name__]})
        else:
            raise ValueError(f"cannot describe policy layer {type(m).__name__} in the safe format")
    space = policy.action_space
    return {
        "kind": "sb3.ActorCriticPolicy.mlp",
        "obs_dim": int(np.prod(policy.observation_space.shape)),
        "action_dim": int(np.prod(space.shape)),
        "policy_net": layers,
        "action_net": [policy.action_net.in_features, policy.action_net.out_features],
        "action_low": np.asarray(space.low, dtype=np.float64).tolist(),
        "action_high": np.asarray(space.high, dtype=np.float64).tolist(),
        "squash_output": bool(getattr(policy, "squash_output", False)),
        "distribution": "diag_gaussian",
    }


def _normalisation(vecnormalize) -> dict[str, Any]:
    if vecnormalize is None:
        return {"norm_obs": False}
    rms = vecnormalize.obs_rms
    return {
        "norm_obs": bool(vecnormalize.norm_obs),
        "mean": np.asarray(rms.mean, dtype=np.float64).tolist(),  # JSON floats round-trip exactly
        "var": np.asarray(rms.var, dtype=np.float64).tolist(),
        "count": float(rms.count),
        "epsilon": float(vecnormalize.epsilon),
        "clip_obs": float(vecnormalize.clip_obs),
    }


def _weights_bytes(policy) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()})


def _unit_blobs(prefix: str, model, vecnormalize, run_meta: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The four files of one saved model, ``policy.json`` (with the others' hashes) last."""
    blobs = [
        (prefix + VECNORM_FILE, pickle.dumps(vecnormalize)),
        (prefix + MODEL_FILE, _model_bytes(model)),
        (prefix + WEIGHTS_FILE, _weights_bytes(model.policy)),
    ]
    manifest = {
        "format": POLICY_FORMAT,
        "num_timesteps": int(model.num_timesteps),
        "files": {name: _sha256(data) for name, data in blobs},
        "architecture": _architecture(model.policy),
        "normalization": _normalisation(vecnormalize),
        "run": {k: v for k, v in run_meta.items() if k != "args"},
    }
    return blobs + [(prefix + POLICY_FILE, _json_bytes(manifest))]


def save_model_files(
    directory: str | os.PathLike,
    model,
    vecnormalize,
    run_info: Mapping[str, Any] | None,
    *,
    model_file: str = MODEL_FILE,
    vecnorm_file: str = VECNORM_FILE,
) -> None:
    """Write one saved model (the unit of ``model_file``'s prefix) and, if given, ``run.json``.

    Signals are held until the unit is complete. Without ``run_info`` the run metadata of the
    safe format comes from the directory's ``run.json`` (the best model of a running run).
    """
    directory = Path(directory)
    prefix = model_file[: -len(MODEL_FILE)] if model_file.endswith(MODEL_FILE) else None
    if prefix is None or vecnorm_file != prefix + VECNORM_FILE:
        raise ValueError(f"a saved model is <prefix>{MODEL_FILE} + <prefix>{VECNORM_FILE}; got {model_file}, {vecnorm_file}")
    meta = run_info if run_info is not None else _read_json_or_empty(directory / RUN_FILE)
    meta = {**meta, "num_timesteps": int(model.num_timesteps)}
    with deferred_signals():
        # Serialise everything first, then move into place: a failure leaves the old unit intact.
        write_unit(directory, _unit_blobs(prefix, model, vecnormalize, meta), run_info)


def write_unit(directory: str | os.PathLike, blobs: list[tuple[str, bytes]],
               run_info: Mapping[str, Any] | None = None) -> None:
    """Write the serialised files of one saved model in order (the manifest ``policy.json`` last),
    then ``run.json`` if given; each atomically, signals held until all are written."""
    directory = Path(directory)
    with deferred_signals():
        directory.mkdir(parents=True, exist_ok=True)
        if run_info is not None:
            blobs = [*blobs, (RUN_FILE, _json_bytes(run_info))]
        for name, data in blobs:
            atomic_write_bytes(directory / name, data)


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        info = load_json_file(path, "run description")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def checkpoint_name(num_timesteps: int) -> str:
    return f"ckpt_{int(num_timesteps)}_steps"


def save_checkpoint(run_dir: str | os.PathLike, model, vecnormalize, run_info: Mapping[str, Any]) -> Path:
    """Write ``checkpoints/ckpt_<steps>_steps/`` under a temporary name, then rename it whole."""
    return fill_checkpoint(run_dir, model.num_timesteps,
                           lambda tmp: save_model_files(tmp, model, vecnormalize, run_info))


def fill_checkpoint(run_dir: str | os.PathLike, num_timesteps: int, fill) -> Path:
    """``checkpoints/ckpt_<num_timesteps>_steps/``: ``fill(tmp_dir)`` writes the unit into a
    temporary directory, which is then renamed into place whole (never a torn checkpoint)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    with deferred_signals():
        root.mkdir(parents=True, exist_ok=True)
        final = root / checkpoint_name(num_timesteps)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        try:
            fill(tmp)
            if final.exists():  # same step count saved twice (e.g. Ctrl-C right after a checkpoint)
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", suffix=".tmp", dir=root))
                os.replace(final, old / final.name)
                os.replace(tmp, final)
                _rmtree(old)
            else:
                os.replace(tmp, final)
        except BaseException:
            _rmtree(tmp)
            raise
    return final


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on (recorded in ``run.json``)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("jmsra_env", "stable_baselines3", "torch", "gymnasium", "numpy", "scipy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            try:
                out[name] = __import__(name).__version__
            except Exception:  # noqa: BLE001 - a version is informative only
                out[name] = "unknown"
    return out


# ---------------------------------------------------------------------------------------------
# Locating and reading a run


def read_run_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``run.json``; ``FileNotFoundError`` / ``ValueError`` naming the path otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run description not found: {path}")
    try:
        info = load_json_file(path, "run description")
    except ValueError as exc:
        raise ValueError(f"corrupt run description {path}: {exc}") from None
    if not isinstance(info, dict) or info.get("format") not in (RUN_FORMAT, *LEGACY_RUN_FORMATS):
        raise ValueError(f"{path} is not a jmsra_env run description (expected format {RUN_FORMAT!r})")
    for key in ("env_id", "config", "action_form", "features"):
        if key not in info:
            raise ValueError(f"run description {path} lacks the field {key!r}")
    for key in ("env_id", "action_form", "features"):
        if not isinstance(info[key], str):
            raise ValueError(f"run description {path}: field {key} must be a string; got {type(info[key]).__name__}")
    if not isinstance(info["config"], dict):
        raise ValueError(f"run description {path}: field config must be an object; got {type(info['config']).__name__}")
    for key in ("num_timesteps", "total_timesteps"):
        v = info.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
            raise ValueError(f"run description {path}: field {key} must be an integer in [0, 2**63); got {v!r:.60}")
    return info


@dataclass(frozen=True)
class SavedUnit:
    """One saved model: the files ``<prefix>model.zip`` ... ``<prefix>policy.json`` in ``directory``."""

    directory: Path
    prefix: str = ""

    def path(self, name: str) -> Path:
        return self.directory / (self.prefix + name)

    @property
    def model_path(self) -> Path:
        return self.path(MODEL_FILE)

    @property
    def vecnorm_path(self) -> Path:
        return self.path(VECNORM_FILE)

    @property
    def policy_path(self) -> Path:
        return self.path(POLICY_FILE)

    @property
    def weights_path(self) -> Path:
        return self.path(WEIGHTS_FILE)

    @property
    def run_path(self) -> Path:
        return self.directory / RUN_FILE

    def exists(self) -> bool:
        return self.policy_path.is_file() or self.model_path.is_file()


def resolve_unit(path: str | os.PathLike) -> SavedUnit:
    """The saved model at a run dir, checkpoint dir, ``*model.zip`` or ``*policy.json`` path."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no trained model at {p}: the path does not exist")
    if p.is_dir():
        unit = SavedUnit(p)
        if not unit.exists():
            newest = _newest_checkpoint_dir(p)
            hint = f"; its newest checkpoint is {newest}" if newest is not None else ""
            raise FileNotFoundError(
                f"no trained model in {p}: expected {POLICY_FILE} or {MODEL_FILE} (a run or checkpoint directory){hint}"
            )
        return unit
    for name in (MODEL_FILE, POLICY_FILE, WEIGHTS_FILE):
        if p.name.endswith(name):
            return SavedUnit(p.parent, p.name[: -len(name)])
    raise ValueError(f"{p} is not a model: expected a run directory, a checkpoint directory, a *{MODEL_FILE} or a *{POLICY_FILE}")


def _newest_checkpoint_dir(run_dir: Path) -> Path | None:
    root = run_dir / CHECKPOINT_DIR
    best: tuple[int, Path] | None = None
    if root.is_dir():
        for d in root.iterdir():
            steps = _checkpoint_steps(d.name)
            if steps is not None and (best is None or steps > best[0]):
                best = (steps, d)
    return best[1] if best is not None else None


def _checkpoint_steps(name: str) -> int | None:
    if name.startswith("ckpt_") and name.endswith("_steps"):
        try:
            return int(name[len("ckpt_") : -len("_steps")])
        except ValueError:
            return None
    return None


def read_policy_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a ``policy.json`` (:func:`jmsra_agents.safe_files.validate_policy_info`: plain
    JSON, nothing executed, every field checked before anything is allocated); ``ValueError``
    naming the path and the field."""
    path = Path(path)
    info = load_json_file(path, "policy description")
    return validate_policy_info(info, path, POLICY_FORMAT)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_unit(unit: SavedUnit, names: tuple[str, ...] = (MODEL_FILE, VECNORM_FILE, WEIGHTS_FILE)) -> dict[str, Any]:
    """Check that ``names`` of a saved model match the hashes in its ``policy.json``; return it.

    ``FileNotFoundError`` when a file is missing, :class:`TornModelError` when a file is not the
    one the manifest was written with (an interrupted save), ``ValueError`` for a corrupt manifest.
    """
    info = read_policy_json(unit.policy_path)
    for name in names:
        path = unit.path(name)
        want = info["files"].get(unit.prefix + name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the saved model {unit.policy_path}")
        if want is None or _file_sha256(path) != want:
            raise TornModelError(
                f"torn saved model: {path} is not the file {unit.policy_path} was written with "
                f"(step {info['num_timesteps']}); a save was interrupted. Use a checkpoint of the run "
                f"(train.py --resume <run dir> picks the newest consistent one)"
            )
    return info


def _check_manifest_present(unit: SavedUnit) -> None:
    """In a run of the current format every saved model has a manifest: none = an interrupted save."""
    if unit.policy_path.is_file():
        return
    try:
        fmt = load_json_file(unit.run_path, "run description").get("format")
    except (OSError, ValueError, AttributeError):
        return
    if fmt == RUN_FORMAT:
        raise TornModelError(f"incomplete saved model {unit.model_path}: its manifest {unit.policy_path.name} is "
                             f"missing (a save was interrupted)")


def resolve_run_files(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(model.zip, vecnormalize.pkl, run.json)`` of a saved model, checked against its manifest.

    Runs older than the manifest (no ``policy.json``) are returned unchecked.
    """
    unit = resolve_unit(path)
    if not unit.model_path.is_file():
        raise FileNotFoundError(f"no SB3 model in {unit.directory}: expected {unit.model_path}")
    vec = unit.vecnorm_path
    if not vec.is_file():
        raise FileNotFoundError(f"normalisation statistics for {unit.model_path} not found: expected {vec}")
    if not unit.run_path.is_file():
        raise FileNotFoundError(f"run description for {unit.model_path} not found: expected {unit.run_path}")
    _check_manifest_present(unit)
    if unit.policy_path.is_file():
        check_unit(unit, (MODEL_FILE, VECNORM_FILE))
    return unit.model_path, vec, unit.run_path


def unit_backend(unit: SavedUnit) -> str:
    """``"torch"`` for a unit of the torch backend (its manifest says so), else ``"sb3"``."""
    try:
        info = json.loads(unit.policy_path.read_text())
        return str(info.get("run", {}).get("backend", "sb3"))
    except (OSError, ValueError, AttributeError):
        return "sb3"


def check_saved_unit(unit: SavedUnit) -> None:
    """Whether a saved model can be resumed: every file present and matching its manifest (the
    SB3 files for an SB3 unit, :data:`TORCH_UNIT_FILES` for a torch-backend unit) and its
    ``run.json`` present; ``FileNotFoundError`` / :class:`TornModelError` / ``ValueError`` else."""
    if unit_backend(unit) == "torch":
        check_unit(unit, TORCH_UNIT_FILES)
        if not unit.run_path.is_file():
            raise FileNotFoundError(f"run description for {unit.policy_path} not found: expected {unit.run_path}")
        return
    resolve_run_files(unit.model_path)


def load_vecnormalize(path: str | os.PathLike):
    """Unpickle saved ``VecNormalize`` statistics (no env attached; ``normalize_obs`` works)."""
    from stable_baselines3.common.vec_env import VecNormalize

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            vn = pickle.load(fh)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise ValueError(f"corrupt normalisation statistics {path}: {exc}") from exc
    if not isinstance(vn, VecNormalize):
        raise ValueError(f"{path} does not hold VecNormalize statistics (got {type(vn).__name__})")
    vn.training = False
    return vn


def load_ppo(path: str | os.PathLike, device: str = "cpu", env=None, inference_only: bool = True):
    """Load an SB3 PPO model; ``ValueError`` naming the path if the file is not one."""
    from stable_baselines3 import PPO

    path = Path(path)
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        return PPO.load(path, env=env, device=device, custom_objects=custom if inference_only else None)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, pickle, torch and SB3 errors all mean "not a usable model"
        raise ValueError(f"corrupt or incompatible PPO model {path}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# The trained policy


class TrainedPolicy:
    """A trained PPO policy that acts on raw environment observations.

    ``predict(obs, deterministic=True) -> (action, None)`` accepts one Dict observation (arrays
    ``(N,)``) or a batch (``(M, N)``); it applies the run's feature transform and the saved
    ``VecNormalize`` statistics, then the network, then the run's action encoding. Actions are
    in the env's Box form (``(2N,)`` or ``(M, 2N)`` in [-1, 1]; float64 for the ``deadline``
    encoding, whose tiny shares float32 cannot hold).

    ``action_form = "team"`` (a multi-agent run, :mod:`jmsra_agents.torch_marl`): the actor is one
    agent's, shared by all: agent ``i`` reads its own block of the features
    (:func:`jmsra_env.core.multiagent.split_agent_features`) and outputs its own ``(medium code,
    finish-time code)``; the agents' codes together are the central deadline-encoded action.

    Attributes: ``env_id`` (the Box ID trained on), ``config`` (:class:`jmsra_env.ScenarioConfig`),
    ``action_form`` (``"box"`` or ``"team"``), ``n_agents``, ``features``, ``action_encoding``, ``run_info`` (``run.json``),
    ``model`` (the SB3 PPO, or a :class:`SafeActor` from the safe format), ``vecnormalize`` (SB3's
    or an :class:`ObsNormalizer`), ``model_path``, ``num_timesteps``.
    """

    def __init__(self, model, vecnormalize, run_info: Mapping[str, Any], model_path: str | os.PathLike = "<memory>"):
        from jmsra_env import make_config, model as jmodel

        self.model = model
        self.vecnormalize = vecnormalize
        self.run_info = dict(run_info)
        self.model_path = Path(model_path)
        self.env_id: str = run_info["env_id"]
        self.action_form: str = run_info["action_form"]
        self.features: str = run_info["features"]
        self.action_encoding: str = run_info.get("action_encoding", "box")
        try:
            self.config = make_config(run_info["config"])
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"{self.model_path}: field run.config: {type(exc).__name__}: {exc}") from None
        self.n_agents = self.config.n_agents
        from jmsra_env.encoding import ACTION_ENCODINGS
        from jmsra_env.features import FEATURE_SETS

        if self.features not in FEATURE_SETS:
            raise ValueError(f"{self.model_path}: field run.features must be one of {FEATURE_SETS}; got {self.features!r:.60}")
        if self.action_encoding not in ACTION_ENCODINGS:
            raise ValueError(f"{self.model_path}: field run.action_encoding must be one of {ACTION_ENCODINGS}; "
                             f"got {self.action_encoding!r:.60}")
        if self.action_form not in ("box", "team"):
            raise ValueError(f"{self.model_path}: field run.action_form must be 'box' or 'team'; got {self.action_form!r:.60}")
        if self.action_form == "team" and self.action_encoding != "deadline":
            raise ValueError(f"{self.model_path}: field run.action_encoding must be 'deadline' for a team policy; "
                             f"got {self.action_encoding!r:.60}")
        self.num_timesteps = int(getattr(model, "num_timesteps", run_info.get("num_timesteps", 0)))
        self._consts = jmodel.model_constants(self.config)
        expected = (2,) if self.action_form == "team" else (2 * self.n_agents,)
        if tuple(model.action_space.shape) != expected:
            raise ValueError(
                f"{self.model_path}: the model's action shape {model.action_space.shape} does not match "
                f"the run's n_agents={self.n_agents} (expected {expected})"
            )

    def normalized_features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """What the network sees for a raw observation: features, then the saved normalisation."""
        from .features import observation_features

        if not isinstance(obs, Mapping) or "snr_db" not in obs:
            raise ValueError(
                f"predict() expects the environment's raw Dict observation; got {type(obs).__name__}"
            )
        n = np.shape(obs["snr_db"])[-1] if np.ndim(obs["snr_db"]) else 0
        if n != self.n_agents:
            raise ValueError(
                f"observation has {n} agents but the policy {self.model_path} was trained for "
                f"n_agents={self.n_agents} ({self.env_id})"
            )
        feats = observation_features(obs, self._consts, self.features)
        if self.action_form == "team":  # (..., N, F_agent): each agent's own block and the broadcast
            from jmsra_env.core.multiagent import split_agent_features

            feats = split_agent_features(feats, self.n_agents, self.features, bool(self.config.session.enabled))
        return np.asarray(self.vecnormalize.normalize_obs(feats), dtype=np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        from .encoding import to_env_action

        x = self.normalized_features(obs)
        if self.action_form == "team":  # one actor per agent; the codes as the central deadline action
            a, _ = self.model.predict(x.reshape(-1, x.shape[-1]), deterministic=deterministic)
            a = np.asarray(a).reshape(*x.shape[:-1], 2)
            action = np.concatenate([a[..., 0], a[..., 1]], axis=-1)
        else:
            action, _ = self.model.predict(x, deterministic=deterministic)
        return to_env_action(self.action_encoding, action, obs, self._consts), None

    def __repr__(self) -> str:
        return (
            f"TrainedPolicy({str(self.model_path)!r}, env_id={self.env_id!r}, n_agents={self.n_agents}, "
            f"num_timesteps={self.num_timesteps})"
        )


class SafeActor:
    """The actor of a saved SB3 policy rebuilt in torch from the safe format (no unpickling).

    Mirrors ``ActorCriticPolicy.predict``: flatten, ``mlp_extractor.policy_net``, ``action_net``
    (the Gaussian's mean, its mode), clip to the action space; same layers, same weights, so the
    deterministic actions equal the SB3 model's bit for bit. The architecture is validated
    (:func:`jmsra_agents.safe_files.validate_architecture`: sizes within the documented limits) before
    any layer is built, and the weights must be finite.
    """

    def __init__(self, architecture: Mapping[str, Any], weights: Mapping[str, Any], device: str = "cpu",
                 source: str | os.PathLike = "<memory>"):
        import gymnasium as gym
        import torch
        import torch.nn as nn

        arch = validate_architecture(architecture, source)
        shapes = {k: ("F32" if getattr(v, "dtype", None) == torch.float32 else str(getattr(v, "dtype", "?")),
                      tuple(getattr(v, "shape", ()))) for k, v in weights.items()}
        needed = check_actor_header(shapes, arch, source)
        check_finite_tensors({k: weights[k] for k in needed}, source)
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}
        try:
            layers = []
            for layer in arch["layers"]:
                if layer[0] == "linear":
                    layers.append(nn.Linear(layer[1], layer[2]))
                else:
                    layers.append(acts[layer[1]]())
            self.obs_dim = arch["obs_dim"]
            self.action_dim = arch["action_dim"]
            self.policy_net = nn.Sequential(*layers)
            self.action_net = nn.Linear(*arch["action_net"])
            low = np.asarray(arch["action_low"], dtype=np.float32)
            high = np.asarray(arch["action_high"], dtype=np.float32)
            self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
            prefix = "mlp_extractor.policy_net."
            self.policy_net.load_state_dict(
                {k[len(prefix):]: weights[k] for k in needed if k.startswith(prefix)}, strict=True
            )
            self.action_net.load_state_dict(
                {k[len("action_net."):]: weights[k] for k in needed if k.startswith("action_net.")}, strict=True
            )
            self.log_std = weights["log_std"].to(torch.float32)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{source}: the safe policy does not match its architecture: {type(exc).__name__}: {exc}") from exc
        self.device = torch.device(device)
        self.policy_net.to(self.device).eval()
        self.action_net.to(self.device).eval()
        self.log_std = self.log_std.to(self.device)

    def predict(self, x, state=None, episode_start=None, deterministic: bool = True):
        import torch

        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1:] != (self.obs_dim,) or x.ndim > 2:
            raise ValueError(f"expected features of shape ({self.obs_dim},) or (M, {self.obs_dim}); got {x.shape}")
        with torch.no_grad():
            t = torch.as_tensor(x.reshape(-1, self.obs_dim), device=self.device).float()
            mean = self.action_net(self.policy_net(t))
            if not deterministic:
                mean = mean + torch.randn_like(mean) * torch.exp(self.log_std)
        a = mean.cpu().numpy().reshape(-1, self.action_dim)
        a = np.clip(a, self.action_space.low, self.action_space.high)
        return (a if x.ndim == 2 else a[0]), None


class ObsNormalizer:
    """``VecNormalize.normalize_obs`` from the statistics saved in JSON (same float64 arithmetic).

    ``obs_dim`` (the features' size) is required to check the statistics' length; the mean must be
    finite and the variance finite and >= 0 (:func:`jmsra_agents.safe_files.validate_normalization`).
    """

    def __init__(self, spec: Mapping[str, Any], obs_dim: int | None = None, source: str | os.PathLike = "<memory>"):
        if obs_dim is None:
            mean = spec.get("mean") if isinstance(spec, Mapping) else None
            obs_dim = len(mean) if isinstance(mean, list) else 0
        spec = validate_normalization(dict(spec) if isinstance(spec, Mapping) else spec, obs_dim, source)
        self.norm_obs = spec["norm_obs"]
        if self.norm_obs:
            self.mean = np.asarray(spec["mean"], dtype=np.float64)
            self.var = np.asarray(spec["var"], dtype=np.float64)
            self.epsilon = spec["epsilon"]
            self.clip_obs = spec["clip_obs"]

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.norm_obs:
            return np.array(obs)
        return np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip_obs, self.clip_obs).astype(np.float32)


def load_trained_policy(path: str | os.PathLike, device: str = "cpu", trust_pickle: bool = False) -> TrainedPolicy:
    """Load a trained policy from a run directory, a checkpoint directory or a model file.

    By default only the safe files are read (``policy.json`` + ``policy.safetensors``: JSON and raw
    tensors, nothing unpickled) and the weights are checked against the manifest's hash.
    ``trust_pickle=True`` loads the SB3 pickles (``model.zip`` + ``vecnormalize.pkl``) instead,
    after checking them against the manifest when there is one (runs older than the safe format
    have none): only for files you trust, since unpickling a crafted file runs its code.

    Raises ``FileNotFoundError`` (missing path or companion file), :class:`TornModelError` (files
    of different saves) or ``ValueError`` (corrupt or foreign file), each naming the path.
    """
    unit = resolve_unit(path)
    if trust_pickle and unit_backend(unit) != "torch":  # a torch-backend unit has no pickle: the safe files
        model_path, vec_path, run_path = resolve_run_files(path)
        run_info = read_run_json(run_path)
        vn = load_vecnormalize(vec_path)
        model = load_ppo(model_path, device=device)
        return TrainedPolicy(model, vn, run_info, model_path)
    _check_manifest_present(unit)
    if not unit.policy_path.is_file():
        raise FileNotFoundError(
            f"no safe policy files in {unit.directory} (expected {unit.policy_path.name} + {unit.weights_path.name}): "
            f"the run predates the safe format. Loading its SB3 pickles runs code from the files: pass "
            f"trust_pickle=True (--trust-pickle) only if you trust whoever made them"
        )
    info = check_unit(unit, (WEIGHTS_FILE,))  # policy.json validated, then the weights' hash (streamed)
    arch = validate_architecture(info["architecture"], unit.policy_path)
    header = read_safetensors_header(unit.weights_path)  # the header alone: no tensor data yet
    needed = check_actor_header(header, arch, unit.weights_path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(unit.weights_path), framework="pt") as fh:
            weights = {name: fh.get_tensor(name) for name in needed}  # the actor's tensors only
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise ValueError(f"corrupt policy weights {unit.weights_path}: {exc}") from exc
    actor = SafeActor(info["architecture"], weights, device=device, source=unit.weights_path)
    actor.num_timesteps = int(info["num_timesteps"])
    run_info = {**info["run"], "num_timesteps": actor.num_timesteps}
    normalizer = ObsNormalizer(info["normalization"], arch["obs_dim"], source=unit.policy_path)
    try:
        return TrainedPolicy(actor, normalizer, run_info, unit.policy_path)
    except ValueError as exc:
        if str(unit.policy_path) in str(exc):
            raise
        raise field_error(unit.policy_path, "run", str(exc)) from exc
