"""The run-directory format of a training run, atomic saving, and loading a trained policy.

Format (``RUN_FORMAT = "jmsra_env.run/1"``)
-------------------------------------------

``train.py`` writes one directory per run, ``<logdir>/<run-name>/``::

    model.zip                       SB3 PPO model (the latest: end of training, or Ctrl-C)
    vecnormalize.pkl                the VecNormalize statistics that go with model.zip (pickle)
    run.json                        what the run was (below)
    best_model.zip                  the best model of the periodic evaluation ...
    best_vecnormalize.pkl           ... and its statistics (same run.json)
    checkpoints/ckpt_<steps>_steps/ every K steps: model.zip, vecnormalize.pkl, run.json
    tb/                             TensorBoard event files (``tensorboard --logdir <run dir>/tb``)

``run.json`` holds: ``format``; ``env_id`` (the SB3-ready Box ID trained on) and
``requested_env_id``; ``config`` (the env's ``ScenarioConfig.to_dict()``, rebuilt with
:func:`jmsra_env.make_config`); ``action_form`` (``"box"``); ``n_agents``; ``features`` (the
:mod:`agents.features` set); ``obs_pipeline`` (``"features -> VecNormalize.normalize_obs"``);
``action_encoding`` (:mod:`agents.encoding`: how the network's output becomes the env's Box
action); ``args`` (the CLI arguments); ``ppo`` (the :class:`agents.ppo.PPOConfig`); ``versions``
(package versions); ``num_timesteps`` (steps trained when this file was written);
``total_timesteps``; ``kind`` (``final``, ``checkpoint``, ``interrupted``, ``running``).

Every file is written to a temporary name in the same directory and moved into place with
``os.replace``; a checkpoint directory is filled under a temporary name and renamed as a whole, so
a crash never leaves a half-written file under a final name.

Loading
-------

:func:`load_trained_policy` takes a run directory, a checkpoint directory or a ``*.zip`` file and
returns a :class:`TrainedPolicy` whose ``predict`` accepts RAW environment observations (one Dict
observation or a batch of them) and applies the saved feature transform and normalisation.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RUN_FORMAT",
    "MODEL_FILE",
    "VECNORM_FILE",
    "RUN_FILE",
    "BEST_MODEL_FILE",
    "BEST_VECNORM_FILE",
    "CHECKPOINT_DIR",
    "TrainedPolicy",
    "load_trained_policy",
    "resolve_run_files",
    "read_run_json",
    "atomic_write_bytes",
    "save_model_files",
    "save_checkpoint",
    "checkpoint_name",
    "package_versions",
]

RUN_FORMAT = "jmsra_env.run/1"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
RUN_FILE = "run.json"
BEST_MODEL_FILE = "best_model.zip"
BEST_VECNORM_FILE = "best_vecnormalize.pkl"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# Atomic writing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    return repr(o)


def save_model_files(
    directory: str | os.PathLike,
    model,
    vecnormalize,
    run_info: Mapping[str, Any] | None,
    *,
    model_file: str = MODEL_FILE,
    vecnorm_file: str = VECNORM_FILE,
) -> None:
    """Atomically write the model, its normalisation statistics and (if given) ``run.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Serialise everything first, then move into place: a failure leaves the old files intact.
    blobs = [(vecnorm_file, pickle.dumps(vecnormalize)), (model_file, _model_bytes(model))]
    if run_info is not None:
        blobs.append((RUN_FILE, _json_bytes(run_info)))
    for name, data in blobs:
        atomic_write_bytes(directory / name, data)


def checkpoint_name(num_timesteps: int) -> str:
    return f"ckpt_{int(num_timesteps)}_steps"


def save_checkpoint(run_dir: str | os.PathLike, model, vecnormalize, run_info: Mapping[str, Any]) -> Path:
    """Write ``checkpoints/ckpt_<steps>_steps/`` under a temporary name, then rename it whole."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(model.num_timesteps)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        save_model_files(tmp, model, vecnormalize, run_info)
        if final.exists():  # same step count saved twice (e.g. Ctrl-C right after a checkpoint)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=root))
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
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt run description {path}: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise ValueError(f"{path} is not a jmsra_env run description (expected format {RUN_FORMAT!r})")
    for key in ("env_id", "config", "action_form", "features"):
        if key not in info:
            raise ValueError(f"run description {path} lacks the field {key!r}")
    return info


def resolve_run_files(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(model.zip, vecnormalize.pkl, run.json)`` for a run dir, checkpoint dir or ``*.zip`` file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no trained model at {p}: the path does not exist")
    if p.is_dir():
        model_path = p / MODEL_FILE
        if not model_path.is_file():
            raise FileNotFoundError(
                f"no trained model in {p}: expected {MODEL_FILE} (a run or checkpoint directory)"
            )
    else:
        model_path = p
        if p.suffix != ".zip":
            raise ValueError(f"{p} is not a model: expected a run directory, a checkpoint directory or a .zip")
    d = model_path.parent
    if model_path.name == BEST_MODEL_FILE:
        vec = d / BEST_VECNORM_FILE
    elif model_path.name == MODEL_FILE:
        vec = d / VECNORM_FILE
    else:
        vec = d / f"{model_path.stem}_{VECNORM_FILE}"
        if not vec.is_file():
            vec = d / VECNORM_FILE
    if not vec.is_file():
        raise FileNotFoundError(f"normalisation statistics for {model_path} not found: expected {vec}")
    run = d / RUN_FILE
    if not run.is_file():
        raise FileNotFoundError(f"run description for {model_path} not found: expected {run}")
    return model_path, vec, run


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

    Attributes: ``env_id`` (the Box ID trained on), ``config`` (:class:`jmsra_env.ScenarioConfig`),
    ``action_form`` (``"box"``), ``n_agents``, ``features``, ``action_encoding``, ``run_info`` (``run.json``),
    ``model`` (the SB3 PPO), ``model_path``, ``num_timesteps``.
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
        self.config = make_config(run_info["config"])
        self.n_agents = self.config.n_agents
        self.num_timesteps = int(getattr(model, "num_timesteps", run_info.get("num_timesteps", 0)))
        self._consts = jmodel.model_constants(self.config)
        expected = (2 * self.n_agents,)
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
        return np.asarray(self.vecnormalize.normalize_obs(feats), dtype=np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        from .encoding import to_env_action

        x = self.normalized_features(obs)
        action, _ = self.model.predict(x, deterministic=deterministic)
        return to_env_action(self.action_encoding, action, obs, self._consts), None

    def __repr__(self) -> str:
        return (
            f"TrainedPolicy({str(self.model_path)!r}, env_id={self.env_id!r}, n_agents={self.n_agents}, "
            f"num_timesteps={self.num_timesteps})"
        )


def load_trained_policy(path: str | os.PathLike, device: str = "cpu") -> TrainedPolicy:
    """Load a trained policy from a run directory, a checkpoint directory or a ``*.zip`` model.

    Raises ``FileNotFoundError`` (missing path or companion file) or ``ValueError`` (corrupt or
    foreign file), each naming the path.
    """
    model_path, vec_path, run_path = resolve_run_files(path)
    run_info = read_run_json(run_path)
    vn = load_vecnormalize(vec_path)
    model = load_ppo(model_path, device=device)
    return TrainedPolicy(model, vn, run_info, model_path)
