"""Vectorised training environments: SB3-ready Box actions, features, round recording, VecNormalize.

The training stack, bottom to top::

    DummyVecEnv | SubprocVecEnv | native   raw JMSRA envs (Dict observation, Box action)
    EncodedActionVecEnv                    policy action -> env Box action (jmsra_agents.encoding)
    VecMonitor                             episode returns for SB3's rollout/ep_rew_mean
    RoundRecorder                          keeps each round's raw observation and charged latency
    FeatureVecEnv                          Dict observation -> jmsra_agents.features vector (float32)
    VecNormalize                           running standardisation of features (and rewards)

:class:`RoundRecorder` sits below the normalisation so that the TensorBoard metrics are in raw
units; at the end of a rollout :class:`jmsra_agents.callbacks.RoundMetricsCallback` solves JMSRA on all
recorded rounds in one batch to log the gap.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecEnvWrapper,
    VecMonitor,
    VecNormalize,
)

import jmsra_env  # noqa: F401 - registers the environment IDs
from jmsra_env import make_config, model
from jmsra_env.config import ScenarioConfig
from jmsra_env.registration import ENV_IDS, env_id as make_env_id, variant_of

from .encoding import DEFAULT_ENCODING, EncodedActionVecEnv
from .features import DEFAULT_FEATURES, RawObservationMemory, n_features, observation_features

__all__ = [
    "VEC_KINDS",
    "box_env_id",
    "scenario_config",
    "make_single_env",
    "make_base_vec_env",
    "make_train_env",
    "RoundRecorder",
    "FeatureVecEnv",
    "find_wrapper",
]

VEC_KINDS = ("dummy", "subproc", "native")


def box_env_id(env_id: str) -> str:
    """The SB3-ready (Box action) twin of a registered ID; ``ValueError`` for an unknown ID."""
    if not isinstance(env_id, str):
        raise ValueError(f"env id must be a string; got {env_id!r}")
    try:
        variant, _ = variant_of(env_id)
    except ValueError:
        raise ValueError(f"unknown environment id {env_id!r}; registered: {list(ENV_IDS)}") from None
    return make_env_id(variant, "box")


def scenario_config(env_id: str, overrides: Mapping[str, Any] | None = None) -> ScenarioConfig:
    """The :class:`ScenarioConfig` that ``gym.make(env_id, config=overrides)`` builds."""
    box_env_id(env_id)
    base = gym.spec(env_id).kwargs.get("base_config") or {}
    return make_config(make_config(base), **dict(overrides or {}))


def make_single_env(env_id: str, config: Mapping[str, Any] | None = None) -> gym.Env:
    """One raw environment (picklable through ``functools.partial`` for ``SubprocVecEnv``; a spawned
    worker imports this module, which registers the IDs)."""
    return gym.make(env_id, config=dict(config or {}))


def make_base_vec_env(
    env_id: str,
    n_envs: int,
    seed: int | None,
    config: Mapping[str, Any] | None = None,
    vec: str = "dummy",
) -> VecEnv:
    """``n_envs`` raw environments of a Box-action ID as an SB3 ``VecEnv`` (Dict observations)."""
    if vec not in VEC_KINDS:
        raise ValueError(f"vec must be one of {VEC_KINDS}; got {vec!r}")
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1; got {n_envs!r}")
    overrides = dict(config or {})
    if vec == "native":
        try:
            from .native_vec_env import make_native_vec_env
        except ImportError as exc:
            raise ValueError(f"--vec native is not available: {exc}") from exc
        venv = make_native_vec_env(env_id, n_envs, seed, config=overrides or None, monitor=False)
    else:
        fns = [functools.partial(make_single_env, env_id, overrides) for _ in range(n_envs)]
        venv = DummyVecEnv(fns) if vec == "dummy" else SubprocVecEnv(fns, start_method="spawn")
        if seed is not None:
            venv.seed(seed)
    return venv


SESSION_INFO_KEYS = ("evictions", "kv_pool_used_fraction")


class RoundRecorder(VecEnvWrapper):
    """Record every round's raw observation and the latency charged for it (``info["latency_s"]``).

    :meth:`pop` returns and clears what was recorded since the last call: ``obs`` (a dict of
    ``(R, ...)`` arrays), ``latency_s``, ``capped`` and ``kv_share`` (``(R,)``), and on a session
    env ``evictions`` and ``kv_pool_used_fraction`` (:data:`SESSION_INFO_KEYS`). At most
    ``max_rounds`` rounds are kept (the oldest are dropped). ``session`` (the scenario's
    ``config.session.enabled``) says whether the env is a session.
    """

    def __init__(self, venv: VecEnv, max_rounds: int = 200_000, *, session: bool = False):
        super().__init__(venv)
        self.max_rounds = max_rounds
        self.session = bool(session)
        self._last_obs: dict[str, np.ndarray] | None = None
        self._clear()

    def _clear(self) -> None:
        self._obs: list[dict[str, np.ndarray]] = []
        self._lat: list[np.ndarray] = []
        self._capped: list[np.ndarray] = []
        self._kv: list[np.ndarray] = []
        self._extra: dict[str, list[np.ndarray]] = {}
        self._count = 0

    def reset(self):
        obs = self.venv.reset()
        self._last_obs = {k: np.array(v, copy=True) for k, v in obs.items()}
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._last_obs is not None:
            self._obs.append(self._last_obs)
            self._lat.append(np.array([float(i["latency_s"]) for i in infos]))
            self._capped.append(np.array([bool(i.get("capped", False)) for i in infos]))
            self._kv.append(np.array([float(i.get("kv_share", np.nan)) for i in infos]))
            for key in SESSION_INFO_KEYS if self.session else ():  # evictions and pool usage after the round
                self._extra.setdefault(key, []).append(np.array([float(i[key]) for i in infos]))
            self._count += len(infos)
            while self._count > self.max_rounds and len(self._lat) > 1:
                self._count -= len(self._lat[0])
                for buf in (self._obs, self._lat, self._capped, self._kv, *self._extra.values()):
                    buf.pop(0)
        self._last_obs = {k: np.array(v, copy=True) for k, v in obs.items()}
        return obs, rewards, dones, infos

    def pop(self) -> dict[str, Any] | None:
        """The rounds recorded since the last call (``None`` if none), then forget them."""
        if not self._lat:
            return None
        out = {
            "obs": {k: np.concatenate([o[k] for o in self._obs]) for k in self._obs[0]},
            "latency_s": np.concatenate(self._lat),
            "capped": np.concatenate(self._capped),
            "kv_share": np.concatenate(self._kv),
            **{k: np.concatenate(v) for k, v in self._extra.items()},
        }
        self._clear()
        return out


class FeatureVecEnv(RawObservationMemory, VecEnvWrapper):
    """Turn the Dict observations of a JMSRA ``VecEnv`` into :func:`observation_features` vectors
    (with the session block on a session scenario, ``config.session.enabled``). It remembers the
    last raw observation, so that ``make_policy(name, venv)`` experts decide on it."""

    def __init__(self, venv: VecEnv, config: ScenarioConfig, kind: str = DEFAULT_FEATURES):
        self.kind = kind
        self.session = bool(config.session.enabled)
        self.consts = model.model_constants(config)
        f = n_features(config.n_agents, kind, session=self.session)
        space = gym.spaces.Box(-np.inf, np.inf, (f,), dtype=np.float32)
        VecEnvWrapper.__init__(self, venv, observation_space=space)

    def _features(self, obs):
        return observation_features(obs, self.consts, self.kind, self.session)

    def reset(self):
        obs = self.venv.reset()
        return self._remember(obs, self._features(obs))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            term = info.get("terminal_observation")
            if isinstance(term, Mapping):
                info["terminal_observation"] = self._features(term)
        return self._remember(obs, self._features(obs)), rewards, dones, infos


def make_train_env(
    env_id: str,
    n_envs: int,
    seed: int | None,
    config: Mapping[str, Any] | None = None,
    *,
    vec: str = "dummy",
    features: str = DEFAULT_FEATURES,
    action_encoding: str = DEFAULT_ENCODING,
    norm_reward: bool = True,
    gamma: float = 0.0,
    clip_obs: float = 10.0,
) -> VecNormalize:
    """The full training stack (see the module docstring) for a registered ID (Box twin used)."""
    box_id = box_env_id(env_id)
    cfg = scenario_config(box_id, config)
    venv = make_base_vec_env(box_id, n_envs, seed, config, vec)
    venv = EncodedActionVecEnv(venv, cfg, action_encoding)
    venv = VecMonitor(venv)
    venv = RoundRecorder(venv, session=cfg.session.enabled)
    venv = FeatureVecEnv(venv, cfg, features)
    return VecNormalize(venv, norm_obs=True, norm_reward=norm_reward, gamma=gamma, clip_obs=clip_obs)


def find_wrapper(venv: VecEnv, cls: type) -> Any | None:
    """The first wrapper of type ``cls`` in a stack of ``VecEnvWrapper`` (or ``None``)."""
    while venv is not None:
        if isinstance(venv, cls):
            return venv
        venv = getattr(venv, "venv", None)
    return None
