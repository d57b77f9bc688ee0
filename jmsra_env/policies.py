"""The experts and baselines of :mod:`jmsra_env.solvers` as policies on the environment.

>>> import gymnasium as gym, jmsra_env
>>> from jmsra_env.policies import make_policy
>>> env = gym.make("jmsra_env/JMSRA-Box-v1")
>>> policy = make_policy("jmsra", env)
>>> obs, _ = env.reset(seed=0)
>>> action, _ = policy.predict(obs, deterministic=True)
>>> obs, reward, terminated, truncated, info = env.step(action)

A policy decides from the observation alone: it rebuilds the round's model terms with
:func:`jmsra_env.model.terms_from_observation` (exact with ``csi_delay = 0``; with a stale
channel it decides on what it sees, as any policy must). ``predict`` follows Stable-Baselines3
(``predict(obs, state=None, episode_start=None, deterministic=True) -> (action, None)``) and
accepts one observation or a batch with a leading axis (a gymnasium vector env or an SB3
``VecEnv``); actions come back in the env's form, Dict or Box, float64 so that they are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from . import actions, model
from .config import ScenarioConfig, make_config
from .solvers import EXPERT_NAMES, Decision, check_name, solve

__all__ = ["ExpertPolicy", "make_policy", "EXPERT_NAMES"]

_FORMS = ("dict", "box")


class ExpertPolicy:
    """An expert (``optimal``, ``jmsra``) or baseline acting on observations of one scenario."""

    def __init__(self, name: str, config: ScenarioConfig, action_form: str = "dict", seed: int | None = None):
        self.name = check_name(name)
        if action_form not in _FORMS:
            raise ValueError(f"action_form must be one of {_FORMS}; got {action_form!r}")
        self.config = config
        self.action_form = action_form
        self.consts = model.model_constants(config)
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"ExpertPolicy({self.name!r}, n_agents={self.config.n_agents}, action_form={self.action_form!r})"

    def decide(self, obs: Mapping[str, Any]) -> Decision:
        """The expert's decision on an observation (``(N,)`` arrays) or a batch (``(M, N)``)."""
        return solve(self.name, self.observed_terms(obs), rng=self.rng)

    def observed_terms(self, obs: Mapping[str, Any]) -> model.RoundTerms:
        """The model terms an observation (or a batch) shows; ``ValueError`` for a malformed one."""
        if not isinstance(obs, Mapping) or "snr_db" not in obs:
            raise ValueError(
                "obs must be the environment's Dict observation (a mapping with 'snr_db', 'load', ...); "
                f"got {type(obs).__name__}"
            )
        n = np.shape(obs["snr_db"])[-1] if np.ndim(obs["snr_db"]) else 0
        if np.ndim(obs["snr_db"]) not in (1, 2) or n != self.config.n_agents:
            raise ValueError(
                f"obs['snr_db'] must have shape (N,) or (M, N) with N = {self.config.n_agents}; "
                f"got {np.shape(obs['snr_db'])}"
            )
        return model.terms_from_observation(self.consts, obs)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """SB3-style: ``(action, None)``; ``state``, ``episode_start`` and ``deterministic`` are
        accepted and ignored (the experts are stateless; ``random`` is random either way)."""
        terms = self.observed_terms(obs)
        d = solve(self.name, terms, rng=self.rng)
        if self.action_form == "box":
            return actions.encode_box(d.media, d.bandwidth_hz, terms), None
        return actions.encode_dict(d.media, d.bandwidth_hz), None

    __call__ = predict


def _find_config(env) -> ScenarioConfig | None:
    for getter in (
        lambda e: e.config,
        lambda e: e.unwrapped.config,
        lambda e: e.get_attr("config")[0],
    ):
        try:
            cfg = getter(env)
        except Exception:  # noqa: BLE001 - any failure means: try the next way
            continue
        if isinstance(cfg, ScenarioConfig):
            return cfg
    return None


def _find_action_form(env) -> str | None:
    space = getattr(env, "single_action_space", None)
    if space is None:
        space = getattr(env, "action_space", None)
    if isinstance(space, spaces.Box):
        return "box"
    if isinstance(space, spaces.Dict):
        return "dict"
    for getter in (lambda e: e.unwrapped.action_form, lambda e: e.get_attr("action_form")[0]):
        try:
            form = getter(env)
        except Exception:  # noqa: BLE001
            continue
        if form in _FORMS:
            return form
    return None


def make_policy(
    name: str,
    env=None,
    seed: int | None = None,
    *,
    config: ScenarioConfig | Mapping[str, Any] | None = None,
    action_form: str | None = None,
) -> ExpertPolicy:
    """An expert policy (one of :data:`EXPERT_NAMES`) for ``env`` or for ``config``.

    ``env`` may be a :class:`~jmsra_env.JMSRAEnv` (wrapped or not), a gymnasium vector env of
    them (or :class:`~jmsra_env.vector.JMSRAVectorEnv`) or an SB3 ``VecEnv``: the scenario comes
    from ``config`` / ``unwrapped.config`` / ``get_attr("config")``, the action form from the
    (single) action space. Without an env give ``config`` (a ``ScenarioConfig`` or overrides) and
    ``action_form`` (default ``"dict"``). ``seed`` seeds the ``random`` policy's generator.
    """
    check_name(name)
    cfg: ScenarioConfig | None
    if config is not None:
        cfg = config if isinstance(config, ScenarioConfig) else make_config(config)
    elif env is not None:
        cfg = _find_config(env)
        if cfg is None:
            raise ValueError(
                f"cannot find the scenario config of {type(env).__name__}; pass config=... "
                "(a ScenarioConfig or a mapping of overrides)"
            )
    else:
        raise ValueError("make_policy needs an env or a config")
    form = action_form
    if form is None and env is not None:
        form = _find_action_form(env)
    form = form or "dict"
    return ExpertPolicy(name, cfg, form, seed)
