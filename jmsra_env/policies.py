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

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from . import actions, model
from .config import ScenarioConfig, make_config
from .solvers import EXPERT_NAMES, Decision, check_name, solve

__all__ = ["ExpertPolicy", "make_policy", "EXPERT_NAMES"]

_FORMS = ("dict", "box")
# Experts the paper compares (in order of preference as a gap reference); the others are baselines.
REFERENCE_EXPERTS = ("optimal", "jmsra")


class ExpertPolicy:
    """An expert (``optimal``, ``jmsra``) or baseline acting on observations of one scenario.

    It is also the evaluation's policy (:class:`jmsra_env.evaluation.Policy`): ``label``, ``kind``
    (``expert``, ``baseline``, or ``bound`` for the oracle), ``decide`` on a batch and
    ``reset(config, seed)``. With ``oracle=True`` it decides on the *true* terms passed as
    ``decide(obs, true_terms=...)`` (perfect, fresh channel knowledge: with ``csi_delay > 0`` a
    bound no policy that sees the observation can reach; otherwise the plain expert).
    """

    def __init__(
        self,
        name: str,
        config: ScenarioConfig,
        action_form: str = "dict",
        seed: int | None = None,
        *,
        oracle: bool = False,
    ):
        self.name = check_name(name)
        if action_form not in _FORMS:
            raise ValueError(f"action_form must be one of {_FORMS}; got {action_form!r}")
        self.config = config
        self.action_form = action_form
        self.oracle = bool(oracle)
        self.consts = model.model_constants(config)
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"ExpertPolicy({self.name!r}, n_agents={self.config.n_agents}, action_form={self.action_form!r})"

    @property
    def label(self) -> str:
        return "oracle" if self.oracle else self.name

    @property
    def kind(self) -> str:
        if self.oracle:
            return "bound"
        return "expert" if self.name in REFERENCE_EXPERTS else "baseline"

    def reset(self, config: ScenarioConfig | None = None, seed: int | None = None) -> None:
        """Before an evaluation: decide for ``config`` from now on, and reseed the ``random``
        policy from ``(seed, label)`` (its draws do not depend on which other policies run)."""
        if config is not None and config != self.config:
            self.config = config
            self.consts = model.model_constants(config)
        if seed is not None:
            self.rng = np.random.default_rng([seed, zlib.crc32(self.label.encode())])

    def decide(self, obs: Mapping[str, Any], true_terms: model.RoundTerms | None = None) -> Decision:
        """The expert's decision on an observation (``(N,)`` arrays) or a batch (``(M, N)``)."""
        terms = self.observed_terms(obs)
        if self.oracle:
            if true_terms is None:
                raise ValueError(f"the oracle {self.name!r} decides on the true terms: pass true_terms=")
            return solve(self.name, true_terms, rng=self.rng)
        return solve(self.name, terms, rng=self.rng)

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
        d = self.decide(obs)
        if self.action_form == "box":  # the env decodes on the round the observation shows
            return actions.encode_box(d.media, d.bandwidth_hz, self.observed_terms(obs)), None
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
    horizon: int | None = None,
) -> ExpertPolicy:
    """An expert policy (one of :data:`EXPERT_NAMES`) for ``env`` or for ``config``.

    ``env`` may be a :class:`~jmsra_env.JMSRAEnv` (wrapped or not), a gymnasium vector env of
    them (or :class:`~jmsra_env.vector.JMSRAVectorEnv`) or an SB3 ``VecEnv``: the scenario comes
    from ``config`` / ``unwrapped.config`` / ``get_attr("config")``, the action form from the
    (single) action space. Without an env give ``config`` (a ``ScenarioConfig`` or overrides) and
    ``action_form`` (default ``"dict"``). ``seed`` seeds the ``random`` policy's generator.

    On a session scenario (``session.enabled``) the names are the session experts'
    (:data:`jmsra_env.session_experts.SESSION_EXPERT_NAMES`: ``jmsra``, ``pool-aware``,
    ``lookahead``, ``clairvoyant``, ``nl-only``, ``kv-only``); ``clairvoyant`` needs ``env`` (it
    reads the true future rounds) and ``horizon`` sets the lookahead's rounds.
    """
    from . import session_experts

    if name in session_experts.SESSION_ONLY_EXPERTS:
        pass  # checked against the scenario below
    else:
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
    if cfg.session.enabled and name in session_experts.SESSION_EXPERT_NAMES:
        future = _session_future(env) if name == "clairvoyant" else None
        h = session_experts.DEFAULT_HORIZON if horizon is None else horizon
        return session_experts.SessionExpertPolicy(name, cfg, form, h, future)
    if name in session_experts.SESSION_ONLY_EXPERTS:
        raise ValueError(f"expert {name!r} needs a session scenario (session.enabled); this one has none")
    return ExpertPolicy(name, cfg, form, seed)


def _session_future(env):
    """``future(horizon) -> (rounds, counted)``: the true next rounds of a session env (single or
    batched, wrapped by Gymnasium wrappers or not), for the clairvoyant expert."""
    from .session_experts import RoundInputs

    base = getattr(env, "unwrapped", env) if env is not None else None
    world = getattr(base, "_world", None)
    if world is None or not hasattr(world, "round_quantities"):
        raise ValueError(
            "the clairvoyant expert reads the true future rounds of a session environment "
            "(JMSRASessionEnv or JMSRASessionVectorEnv, Gymnasium-wrapped or not); got "
            f"{type(env).__name__}"
        )

    def future(horizon: int):
        rounds_left = base.config.episode_rounds - np.asarray(base._round).reshape(-1)  # incl. now
        ahead = world.rounds_ahead
        out, counted = [], []
        for h in range(1, horizon):
            q = world.round_quantities(min(h, ahead))
            out.append(
                RoundInputs(
                    q["snr_db"], world.peak_compute_flops, world.peak_mem_bw_bytes_per_s, q["load"], q["context_tokens"],
                    q["new_tokens"], q["nl_ratio"], q["receiver_load"], q["gain_hz"],
                )
            )
            counted.append((h < rounds_left) & (h <= ahead))
        return out, np.array(counted).reshape(len(out), -1)

    return future
