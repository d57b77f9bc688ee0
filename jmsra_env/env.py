"""The Gymnasium environment: one step is one collaboration round."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from . import actions, model, render, session
from .config import ScenarioConfig, make_config
from .core import Core
from .session_world import max_context_tokens
from .solvers import solve
from .world import SNR_MAX_DB, SNR_MIN_DB

__all__ = [
    "JMSRAEnv",
    "make_observation_space",
    "make_session_observation_space",
    "observation_space_of",
    "SESSION_OBS_KEYS",
    "make_action_space",
    "resolve_env_config",
    "check_env_arguments",
    "enclosing_time_limit",
    "ACTION_FORMS",
]

SESSION_OBS_KEYS = (
    "new_tokens",
    "unseen_tokens",
    "kv_resident_tokens",
    "rounds_since_kv",
    "kv_pool_used_fraction",
    "kv_pool_bytes",
)

ACTION_FORMS = ("dict", "box")


def make_observation_space(cfg: ScenarioConfig) -> spaces.Dict:
    """The Dict observation space of a scenario (float64: the values are charged exactly)."""
    n, wl = cfg.n_agents, cfg.workload
    devs = wl.sender_profiles
    f = [d.peak_flops for d in devs]
    w = [d.mem_bw_bytes_per_s for d in devs]

    def box(lo, hi, shape=(n,)):
        return spaces.Box(low=float(lo), high=float(hi), shape=shape, dtype=np.float64)

    return spaces.Dict(
        {
            "snr_db": box(SNR_MIN_DB, SNR_MAX_DB),
            "compute_flops": box(min(f), max(f)),
            "mem_bw_bytes_per_s": box(min(w), max(w)),
            "load": box(0.0, wl.load_max),
            "context_tokens": box(wl.context_min_tokens, wl.context_max_tokens),
            "nl_tokens": box(0.0, wl.context_max_tokens),
            "receiver_load": box(0.0, wl.load_max, (1,)),
        }
    )


def make_session_observation_space(cfg: ScenarioConfig) -> spaces.Dict:
    """The Dict observation space of a session scenario: the single-round keys (with contexts up
    to :func:`max_context_tokens`) and :data:`SESSION_OBS_KEYS`."""
    n = cfg.n_agents
    top = float(max_context_tokens(cfg))

    def box(lo, hi, shape=(n,)):
        return spaces.Box(low=float(lo), high=float(hi), shape=shape, dtype=np.float64)

    base = dict(make_observation_space(cfg).spaces)
    base["context_tokens"] = box(cfg.workload.context_min_tokens, top)
    base["nl_tokens"] = box(0.0, top)
    base["new_tokens"] = box(
        min(cfg.session.new_tokens_min, cfg.workload.context_min_tokens),
        max(cfg.session.new_tokens_max, cfg.workload.context_max_tokens),
    )
    base["unseen_tokens"] = box(0.0, top)
    base["kv_resident_tokens"] = box(0.0, top)
    base["rounds_since_kv"] = box(0.0, session.never_rounds(cfg))
    base["kv_pool_used_fraction"] = box(0.0, 1.0, (1,))
    base["kv_pool_bytes"] = box(0.0, cfg.kv_pool_bytes, (1,))
    return spaces.Dict(base)


def observation_space_of(cfg: ScenarioConfig) -> spaces.Dict:
    """The observation space of a scenario: the session's for a session, else the round's."""
    return make_session_observation_space(cfg) if cfg.session.enabled else make_observation_space(cfg)


def make_action_space(cfg: ScenarioConfig, action_form: str) -> spaces.Space:
    """The action space of a scenario in the given form (``"dict"`` or ``"box"``)."""
    n = cfg.n_agents
    if action_form == "dict":
        return spaces.Dict(
            {
                "media": spaces.MultiBinary(n),
                "bandwidth": spaces.Box(0.0, 1.0, (n,), dtype=np.float32),
            }
        )
    if action_form == "box":
        return spaces.Box(-1.0, 1.0, (2 * n,), dtype=np.float32)
    raise ValueError(f"action_form must be one of {ACTION_FORMS}; got {action_form!r}")


def breakdown_info(br: model.LatencyBreakdown) -> dict[str, Any]:
    """The ``info`` entries of one round's latency breakdown (arrays are fresh, not copied)."""
    media = br.media
    # a single round's int8 / bool media (the decoders'): a Python sum (the same integer) is
    # cheaper than a NumPy reduction
    small = media.ndim == 1 and media.dtype.itemsize == 1 and media.dtype.kind in "biu"
    kv = sum(media.tolist()) if small else media.sum()
    return {
        "latency_s": float(br.latency_s),
        "uncapped_latency_s": float(br.uncapped_latency_s),
        "capped": bool(br.capped),
        "media": media,
        "bandwidth_hz": br.bandwidth_hz,
        "rate_bps": br.rate_bps,
        "compute_s": br.compute_s,
        "transmission_s": br.transmission_s,
        "finish_s": br.finish_s,
        "receiver_s": br.receiver_s,
        "answer_s": float(br.answer_s),
        "kv_share": float(kv) / media.shape[-1],
    }


class JMSRAEnv(gym.Env[dict, Any]):
    """Joint media selection and bandwidth allocation for a team of LLM agents.

    ## Description

    ``N`` embodied agents each hold a context of ``L_i`` tokens that a receiver agent needs. Every
    round each agent sends it either as a natural-language summary of ``K_i`` tokens (decode, send a
    few hundred bytes, the receiver prefills) or as its KV cache (no decoding, megabytes over the
    air, the receiver loads it), over an FDMA uplink of total bandwidth ``B`` split between the
    agents. The round ends when the receiver has all messages, processed them and decoded a
    ``G``-token answer. The goal is to minimise this end-to-end latency ``T`` (docs/model.md, sections
    2 and 3; after Dai, Xiang, Yang, arXiv 2605.25422).

    ## Action Space

    ``action_form="dict"`` (default): ``Dict(media=MultiBinary(N), bandwidth=Box(0, 1, (N,)))``,
    0 = NL and 1 = KV; the bandwidth shares are normalised by their sum, all-zero is an equal split.
    ``action_form="box"`` (SB3-ready, the ``-Box-v1`` IDs): ``Box(-1, 1, (2N,), float32)``;
    ``a[:N] > 0`` means KV and ``a[N:]`` are log-scale weights ``10 ** (5 a)`` on the bandwidth
    left once every agent has its *cap floor*, the least bandwidth with which it finishes before
    the latency cap (computed from the observed round; see :mod:`jmsra_env.actions`). No action
    is a cliff: whenever the chosen media allow an uncapped split, every action decodes to one.
    :func:`jmsra_env.encode_box` expresses any decision, to ~1e-7 of its latency in float32.
    Mis-shaped, non-finite, negative (dict) or out-of-range (box) actions raise ``ValueError``.
    Any finite non-negative shares (subnormal, near the float64 maximum) grant finite bandwidths
    summing to ``B``, and no action beats the exact optimum of its round.

    ## Observation Space

    A ``Dict`` of float64 arrays, per agent ``i`` unless stated:

    | key                  | meaning                                           | unit   | bounds            |
    |----------------------|---------------------------------------------------|--------|-------------------|
    | `snr_db`             | SNR alone on the full band, ``p g_i / (N0 B)``    | dB     | [-150, 150]       |
    | `compute_flops`      | peak compute of the agent's device                | FLOP/s | catalog min..max  |
    | `mem_bw_bytes_per_s` | peak memory bandwidth of the agent's device       | byte/s | catalog min..max  |
    | `load`               | background load ``u_i``                           | 1      | [0, u_max]        |
    | `context_tokens`     | context length ``L_i``                            | tokens | [L_min, L_max]    |
    | `nl_tokens`          | NL summary length ``K_i``                         | tokens | [0, L_max]        |
    | `receiver_load`      | the receiver's background load (shape ``(1,)``)   | 1      | [0, u_max]        |

    With ``csi_delay = 0`` this is a sufficient statistic: with the static config,
    :func:`jmsra_env.model.terms_from_observation` and :func:`jmsra_env.model.latency` reproduce the
    reward exactly. With ``csi_delay = k`` the SNR shown is ``k`` rounds old.

    ## Rewards

    ``-min(T, latency_cap_s)`` in seconds. ``T`` is infinite when an agent with a payload gets no
    bandwidth; ``info["capped"]`` says that the cap applied.

    ## Starting State

    Distances ``U[20, 250]`` m, shadowing ``N(0, 8 dB)``, Rayleigh fading, loads ``U[0, u_max]``,
    and a sender device per agent drawn from ``workload.sender_devices``; ``L_i`` and ``K_i`` are
    drawn anew every round. All randomness flows from ``reset(seed=...)`` through ``self.np_random``.

    ## Episode End

    Never terminated; truncated after ``episode_rounds`` (64) rounds, or after ``K`` when a
    Gymnasium ``TimeLimit(K)`` wraps the env (``gym.make(id, max_episode_steps=K)``): an enclosing
    ``TimeLimit`` wins (see :func:`enclosing_time_limit`).

    ## Info

    ``latency_s`` (capped), ``uncapped_latency_s``, ``capped``, per agent ``media``, ``bandwidth_hz``,
    ``rate_bps``, ``compute_s`` (prefill + NL decoding), ``transmission_s``, ``finish_s``,
    ``receiver_s``; ``answer_s``, ``kv_share``, ``round``; with ``jmsra_in_info`` also
    ``jmsra_latency_s``, the JMSRA expert's latency on the same round.

    ## Arguments

    ``JMSRAEnv(config=None, *, base_config=None, action_form="dict", render_mode=None, **overrides)``:
    ``config`` is a :class:`ScenarioConfig` or a mapping of overrides applied over ``base_config``
    (what a registered variant sets); keyword ``overrides`` apply last. Unknown keys raise
    :class:`~jmsra_env.config.UnknownKeyError` (a ``ValueError`` and a ``TypeError``, "unexpected
    keyword argument 'KEY'"). ``render_mode`` is ``"ansi"`` (a per-agent table) or ``"rgb_array"``.

    ``gym.make(id, features=..., action_encoding=...)`` (the registered entry point,
    :func:`jmsra_env.wrappers.make_env`) wraps this env with :mod:`jmsra_env.features` (a flat
    float32 observation) and :mod:`jmsra_env.encoding` (the deadline action encoding). The rounds
    are independent of the decisions: a contextual bandit, train with discount 0.

    ## Version History

    * v1 (Box IDs only): log-scale weights above the cap floors replace the linear shares
      ``(a[N:] + 1) / 2`` (where ``-1`` was zero bandwidth and capped the round).
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        config: ScenarioConfig | Mapping[str, Any] | None = None,
        *,
        base_config: ScenarioConfig | Mapping[str, Any] | None = None,
        action_form: str = "dict",
        render_mode: str | None = None,
        **overrides: Any,
    ):
        cfg = resolve_env_config(config, base_config, overrides)
        check_env_arguments(action_form, render_mode, self.metadata["render_modes"])
        self.config = cfg
        self.action_form = action_form
        self.render_mode = render_mode
        self.consts = model.model_constants(cfg)
        self.observation_space = observation_space_of(cfg)
        self.action_space = make_action_space(cfg, action_form)
        self.core = Core(cfg, 1)  # the batched round, as a batch of one
        self._terms: model.RoundTerms | None = None  # the core's current terms, unbatched
        self._episode_rounds = cfg.episode_rounds  # the episode's length (see ``reset``)
        self._last_info: dict[str, Any] | None = None
        self._last_obs: dict[str, np.ndarray] | None = None

    # -- Gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        limit = enclosing_time_limit(self)
        self._episode_rounds = self.config.episode_rounds if limit is None else limit
        self.core.reset(self.np_random)
        self._terms = self.core.env_terms(0)
        self._last_info = None
        obs = self._observation()
        return obs, {"round": 0}

    def step(self, action):
        terms = self._terms
        if terms is None:
            raise RuntimeError("call reset() before step()")
        media, bandwidth_hz = self.decode_action(action)
        br = model.latency(terms, media, bandwidth_hz)
        info = breakdown_info(br)
        info["round"] = played = self._round
        if self.config.jmsra_in_info:
            info["jmsra_latency_s"] = float(solve("jmsra", terms).latency_s)
        batch: dict[str, Any] = {}
        self.core.advance(self.np_random, media[None], batch)
        if self.core.session:  # the round's evictions and the pool after it
            info["evicted"] = batch["evicted"][0]
            info["evictions"] = int(batch["evictions"][0])
            info["kv_pool_used_bytes"] = float(batch["kv_pool_used_bytes"][0])
            info["kv_pool_used_fraction"] = float(batch["kv_pool_used_fraction"][0])
        self._last_info = info
        self._terms = self.core.env_terms(0)
        truncated = played + 1 >= self._episode_rounds  # advance counted the round
        return self._observation(), -info["latency_s"], False, truncated, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        if self.render_mode == "ansi":
            return render.ansi_table(self._last_info, self._last_obs, self.config)
        return render.rgb_figure(self._last_info, self._last_obs, self.config)

    # -- helpers -----------------------------------------------------------------------------

    def decode_action(self, action) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``action`` and return ``(media (N,), bandwidth_hz (N,))``."""
        if self.action_form == "box":
            return actions.decode_box(action, self.observed_terms())
        return actions.decode_dict(action, self.config.n_agents, self.consts.bandwidth_hz)

    def observed_terms(self) -> model.RoundTerms:
        """The model terms of the next round as the last observation shows them (what a policy
        rebuilds with :func:`jmsra_env.model.terms_from_observation`, and what the Box form decodes
        on); equal to :meth:`current_terms` when ``csi_delay = 0``."""
        terms = self.current_terms()
        if self.config.csi_delay == 0:
            return terms
        return model.terms_from_observation(self.consts, self._last_obs)

    def current_terms(self) -> model.RoundTerms:
        """The model terms the next step will charge (true channel, even with ``csi_delay``)."""
        if self._terms is None:
            raise RuntimeError("call reset() first")
        return self._terms

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.core.env_observation(0)
        self._last_obs = obs
        return obs

    @property
    def receiver_state(self) -> session.SessionState | None:
        """Sessions: the receiver's state (batch of one) before the next step; else None."""
        return None if self.core.receiver is None else self.core.receiver.state

    # The core's parts under the names the experts read (the session's world, the round counter).
    @property
    def _world(self):
        return self.core.world

    @property
    def _round(self) -> int:
        return int(self.core.round[0])


def enclosing_time_limit(env: gym.Env, depth: int = 16) -> int | None:
    """``max_episode_steps`` of the Gymnasium ``TimeLimit`` wrapping ``env`` whose ``reset`` is
    being called, or None.

    ``gym.make(id, max_episode_steps=K)`` wraps the env in ``TimeLimit(K)`` but tells the env
    nothing (its ``spec`` says ``max_episode_steps=None``), and the registered IDs keep no spec
    limit so that ``episode_rounds`` passed through ``gym.make`` keeps working. To honour ``K``
    (longer or shorter than ``episode_rounds``) the env looks for that wrapper among the callers
    of its ``reset``: a few frames up the stack, only at reset.
    """
    from gymnasium.wrappers import TimeLimit

    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "reset" else None
        if isinstance(owner, TimeLimit) and owner.unwrapped is env:
            return int(owner._max_episode_steps)
        frame = frame.f_back
    return None


def resolve_env_config(config, base_config, overrides) -> ScenarioConfig:
    """The scenario of ``JMSRAEnv(config, base_config=..., **overrides)``: a ``ScenarioConfig``
    ``config`` is taken as is; a mapping applies over ``base_config`` (a registered variant's
    settings); keyword ``overrides`` apply last."""
    cfg = make_config(base_config)
    if isinstance(config, ScenarioConfig):
        cfg = config
    elif config is not None:
        if not isinstance(config, Mapping):
            raise ValueError(
                f"config must be a ScenarioConfig or a mapping of overrides; got {type(config).__name__}"
            )
        cfg = make_config(cfg, **dict(config))
    if overrides:
        cfg = make_config(cfg, **overrides)
    return cfg


def check_env_arguments(action_form: str, render_mode: str | None, render_modes) -> None:
    """``ValueError`` for an unknown action form or render mode."""
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode must be one of {list(render_modes)} or None; got {render_mode!r}")
    if action_form not in ACTION_FORMS:
        raise ValueError(f"action_form must be one of {ACTION_FORMS}; got {action_form!r}")
