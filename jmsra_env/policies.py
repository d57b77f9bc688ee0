"""The experts and baselines of :mod:`jmsra_env.solvers` as policies on the environment.

>>> import gymnasium as gym, jmsra_env
>>> from jmsra_env.policies import make_policy
>>> env = gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
>>> policy = make_policy("jmsra", env)
>>> obs, _ = env.reset(seed=0)
>>> action, _ = policy.predict(obs, deterministic=True)
>>> obs, reward, terminated, truncated, info = env.step(action)

A policy decides from the observation alone: it rebuilds the round's model terms with
:func:`jmsra_env.model.terms_from_observation` (exact with ``csi_delay = 0``; with a stale
channel it decides on what it sees, as any policy must). ``predict`` follows Stable-Baselines3
(``predict(obs, state=None, episode_start=None, deterministic=True) -> (action, None)``) and
accepts one observation or a batch with a leading axis (a gymnasium vector env or an SB3
``VecEnv``); actions come back in the env's form, Dict or Box, and in its action encoding,
float64 so that they are exact. ``make_policy`` sees through the env's options: on an env made
with ``features=`` the policy is handed the feature vectors and decides on the raw observation
behind them; with ``action_encoding=`` its actions are in that encoding, charged exactly what
the plain env charges for the same decision (:class:`~jmsra_env.expert_policy.ExpertPolicy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from . import session_experts
from .config import ScenarioConfig, make_config
from .expert_policy import ACTION_FORMS, POLICY_ENCODINGS, REFERENCE_EXPERTS, ExpertPolicy
from .session_experts import RoundInputs
from .solvers import EXPERT_NAMES, check_name
from .stale import STALE_AWARE, StaleAwarePolicy

__all__ = ["ExpertPolicy", "make_policy", "EXPERT_NAMES", "REFERENCE_EXPERTS", "env_views"]

_FORMS = ACTION_FORMS


def env_views(env) -> tuple[Any, str | None]:
    """``(feature_source, action_encoding)`` of an environment's wrapper chain.

    ``feature_source`` is the layer that turns observations into features
    (:class:`jmsra_env.features.FeatureObservation`, its vector twin, ``jmsra_agents.envs.FeatureVecEnv``;
    for a vector env of wrapped sub-environments, ``SyncVectorEnv`` or SB3's ``DummyVecEnv``, their
    layers stacked) or None; ``action_encoding`` is that of the layer that decodes one
    (:class:`jmsra_env.encoding.EncodedAction`, its vector twin,
    ``jmsra_agents.encoding.EncodedActionVecEnv``) or None. Layers say what they are with a class
    attribute ``jmsra_view``; the chain is followed through ``.env`` (Gymnasium), ``.venv``
    (Stable-Baselines3) and ``.envs`` (the sub-environments). Sub-environments in other processes
    are asked through ``get_attr`` (SB3) or their spec (Gymnasium); an env that applies the options
    itself (the torch vector env) says its ``action_encoding``. Features that hide the raw
    observation from the process (other processes, the torch env's own) are a ``ValueError``."""
    layer, depth = env, 0
    features, encoding = None, None
    while layer is not None and depth < 256:
        view = getattr(type(layer), "jmsra_view", None)
        if view == "features" and features is None:
            features = layer
        elif view == "action_encoding" and encoding is None:
            encoding = layer.encoding
        attrs = getattr(layer, "__dict__", {})
        subs = attrs.get("envs")
        if isinstance(subs, (list, tuple)) and subs and "env" not in attrs and "venv" not in attrs:
            views = [env_views(sub) for sub in subs]
            if encoding is None:
                encoding = _agreed([v[1] for v in views], "action_encoding")
            if features is None and any(v[0] is not None for v in views):
                if not all(v[0] is not None for v in views):
                    raise ValueError("some sub-environments have features= and others not: make_policy cannot decide")
                features = _StackedFeatures([v[0] for v in views])
            return features, encoding
        nxt = attrs.get("env", attrs.get("venv"))
        if nxt is None and view is None and "action_encoding" in attrs:  # an env applying the options itself
            if attrs.get("features") is not None and features is None:  # (the torch vector env)
                raise ValueError(
                    f"{type(layer).__name__} applies features= itself: an expert cannot see the raw observations; "
                    "make the env without features= (or with backend='numpy')"
                )
            encoding = encoding if encoding is not None else attrs["action_encoding"]
        elif nxt is None:
            remote = _remote_views(layer)
            if remote is not None:
                if remote[0] and features is None:
                    raise ValueError(
                        f"the sub-environments of {type(layer).__name__} run in other processes with features=: an "
                        "expert cannot see the raw observations; use a SyncVectorEnv / DummyVecEnv or no features="
                    )
                encoding = encoding if encoding is not None else remote[1]
        layer = nxt
        depth += 1
    return features, encoding


def _agreed(values, name: str):
    if len(set(values)) > 1:
        raise ValueError(f"the sub-environments differ in {name}: {sorted(map(str, set(values)))}")
    return values[0]


def _remote_views(layer) -> tuple[bool, str | None] | None:
    """``(has_features, action_encoding)`` of sub-environments in other processes: from a
    Gymnasium vector env's spec, or SB3's ``get_attr``; None for a local environment."""
    if hasattr(layer, "remotes") and callable(getattr(layer, "get_attr", None)):  # SB3 SubprocVecEnv
        def ask(attr):
            try:
                return layer.get_attr(attr)[0]
            except Exception:  # noqa: BLE001 - no such attribute in the sub-environment
                return None

        return ask("raw_observation_of") is not None, ask("encoding")
    kwargs = getattr(getattr(layer, "spec", None), "kwargs", None)
    if hasattr(layer, "num_envs") and isinstance(kwargs, Mapping) and not hasattr(layer, "config"):
        return kwargs.get("features") is not None, kwargs.get("action_encoding")
    return None


class _StackedFeatures:
    """The feature layers of a vector env's sub-environments as one source of raw observations:
    row ``i`` of the batch is sub-environment ``i``'s."""

    def __init__(self, layers):
        self.layers = layers

    def raw_observation_of(self, features) -> Mapping[str, np.ndarray]:
        rows = np.asarray(features)
        if rows.ndim < 1 or rows.shape[0] != len(self.layers):
            raise ValueError(
                f"obs must be the batch of the {len(self.layers)} sub-environments' latest feature observations; "
                f"got shape {rows.shape}"
            )
        raws = [layer.raw_observation_of(row) for layer, row in zip(self.layers, rows)]
        return {k: np.stack([np.asarray(r[k]) for r in raws]) for k in raws[0]}


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
    action_encoding: str | None = None,
) -> ExpertPolicy:
    """An expert policy (one of :data:`EXPERT_NAMES`, or ``"stale-aware"``) for ``env`` or for ``config``.

    ``env`` may be a :class:`~jmsra_env.JMSRAEnv` (wrapped or not), a gymnasium vector env of
    them (or :class:`~jmsra_env.vector.JMSRAVectorEnv`) or an SB3 ``VecEnv``: the scenario comes
    from ``config`` / ``unwrapped.config`` / ``get_attr("config")``, the action form from the
    (single) action space. Without an env give ``config`` (a ``ScenarioConfig`` or overrides) and
    ``action_form`` (default ``"dict"``). ``seed`` seeds the ``random`` policy's generator.

    The env's options are seen through (:func:`env_views`): with ``action_encoding=`` the actions
    come in that encoding (or give ``action_encoding`` without an env), with ``features=`` the
    policy decides on the raw observation behind the feature vectors it is handed.

    On a session scenario (``session.enabled``) the names are the session experts'
    (:data:`jmsra_env.session_experts.SESSION_EXPERT_NAMES`: ``jmsra``, ``pool-aware``,
    ``lookahead``, ``clairvoyant``, ``nl-only``, ``kv-only``); ``clairvoyant`` needs ``env`` (it
    reads the true future rounds) and ``horizon`` sets the lookahead's rounds.

    ``"stale-aware"`` (single-round scenarios, :class:`jmsra_env.stale.StaleAwarePolicy`): the
    decision with the least expected latency given a stale channel (``csi_delay > 0``; the exact
    optimum otherwise); ``seed`` seeds its channel draws. Not in :data:`EXPERT_NAMES`: opt-in.
    """
    if name in session_experts.SESSION_ONLY_EXPERTS or name == STALE_AWARE:
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
    feature_layer, found_encoding = env_views(env) if env is not None else (None, None)
    if action_encoding is None:
        action_encoding = found_encoding
    elif action_encoding not in POLICY_ENCODINGS:
        raise ValueError(f"action_encoding must be one of {POLICY_ENCODINGS}; got {action_encoding!r}")
    policy: ExpertPolicy
    if cfg.session.enabled and name in session_experts.SESSION_EXPERT_NAMES:
        future = _session_future(env) if name == "clairvoyant" else None
        h = session_experts.DEFAULT_HORIZON if horizon is None else horizon
        policy = session_experts.SessionExpertPolicy(name, cfg, form, h, future, action_encoding=action_encoding)
    elif name in session_experts.SESSION_ONLY_EXPERTS:
        raise ValueError(f"expert {name!r} needs a session scenario (session.enabled); this one has none")
    elif name == STALE_AWARE:
        if cfg.session.enabled:
            raise ValueError(f"expert {name!r} is for single-round scenarios; this one is a session scenario")
        policy = StaleAwarePolicy(cfg, form, seed, action_encoding=action_encoding)
    else:
        policy = ExpertPolicy(name, cfg, form, seed, action_encoding=action_encoding)
    policy.feature_source = feature_layer
    return policy


def _session_future(env):
    """``future(horizon) -> (rounds, counted)``: the true next rounds of a session env (single or
    batched, wrapped by Gymnasium wrappers or not), for the clairvoyant expert."""
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
