"""Sessions (docs/sessions.md): many rounds, one receiver memory, as pure functions over batches.

In a session the same agents report round after round, their contexts grow
(``L_i(t) = L_i(t-1) + dL_i(t)``) and the receiver keeps what it was sent. Per agent it knows
``seen_i`` tokens of the context (through either medium) and holds the KV cache of a prefix of
``kv_i <= seen_i`` tokens, sent last in round ``last_kv_i``; the caches live in a pool of
``kv_pool_bytes`` bytes, emptied least-recently-sent first when it overflows.

* :class:`SessionState` is the receiver's state, a frozen value with batch shape ``(...)``;
* :func:`session_terms` builds a round's :class:`~jmsra_env.model.RoundTerms` with
  :func:`jmsra_env.model.round_terms` (prefill of the new tokens only, an NL summary of the unseen
  tokens, the KV delta), so :func:`jmsra_env.model.latency` and every solver work on it unchanged;
* :func:`transition` is the state's change after a round: ``(state, media, L, t) -> (state',
  evicted)``, LRU eviction included.

Nothing here draws random numbers or imports the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import model
from .backend import NUMPY, namespace
from .config import ScenarioConfig

__all__ = [
    "NEVER_ROUND",
    "SessionState",
    "initial_state",
    "session_nl_tokens",
    "session_terms",
    "unit_terms",
    "scale_terms",
    "session_terms_from_observation",
    "transition",
    "rounds_since_kv",
    "never_rounds",
    "state_from_observation",
]

# ``last_kv_round`` of an agent that never sent KV: older than any round.
NEVER_ROUND = -(1 << 40)
_NO_CACHE = np.iinfo(np.int64).max  # eviction key of an agent without a resident cache


@dataclass(frozen=True)
class SessionState:
    """The receiver's memory of a batch of sessions; arrays ``(..., N)``."""

    seen_tokens: np.ndarray  # tokens of each agent's context the receiver knows (float64)
    kv_tokens: np.ndarray  # tokens of the resident KV prefix, <= seen_tokens (float64)
    last_kv_round: np.ndarray  # round of the agent's last KV message, NEVER_ROUND if none (int64)
    kv_pool_bytes: float  # size of the receiver's KV pool M
    kv_bytes_per_token: float  # kappa / 8

    @cached_property  # a state is a value: computed once
    def pool_used_bytes(self) -> np.ndarray:
        """U = sum_i kv_i kappa / 8, shape ``(...)``."""
        return model.sum_over_agents(self.kv_tokens) * self.kv_bytes_per_token

    @property
    def pool_used_fraction(self) -> np.ndarray:
        """U / M, shape ``(...)``."""
        return self.pool_used_bytes / self.kv_pool_bytes

    def where(self, mask, other: SessionState) -> SessionState:
        """Rows of ``other`` where ``mask`` (batch shape) is true, of ``self`` elsewhere."""
        xp = namespace(self.seen_tokens)
        m = xp.asarray(mask, dtype=xp.bool_)[..., None]
        return SessionState(
            xp.where(m, other.seen_tokens, self.seen_tokens),
            xp.where(m, other.kv_tokens, self.kv_tokens),
            xp.where(m, other.last_kv_round, self.last_kv_round),
            self.kv_pool_bytes,
            self.kv_bytes_per_token,
        )

    def __getitem__(self, index) -> SessionState:
        """Sessions ``index`` of the batch (NumPy indexing over the batch axes)."""
        return SessionState(
            self.seen_tokens[index], self.kv_tokens[index], self.last_kv_round[index],
            self.kv_pool_bytes, self.kv_bytes_per_token,
        )


def initial_state(
    cfg: ScenarioConfig, batch_shape: tuple[int, ...] = (), kv_pool_bytes: float | None = None, xp=NUMPY
) -> SessionState:
    """An empty receiver (nothing seen, nothing resident) for every session of the batch.

    ``kv_pool_bytes`` defaults to the scenario's (``cfg.kv_pool_bytes``); ``xp`` is the array
    namespace of the state (:mod:`jmsra_env.backend`; NumPy by default).
    """
    shape = (*batch_shape, cfg.n_agents)
    pool = cfg.kv_pool_bytes if kv_pool_bytes is None else float(kv_pool_bytes)
    if not pool > 0.0:  # inf allowed: an unbounded pool
        raise ValueError(f"kv_pool_bytes must be > 0; got {kv_pool_bytes!r}")
    return SessionState(
        xp.zeros(shape),
        xp.zeros(shape),
        xp.full(shape, NEVER_ROUND, dtype=xp.int64),
        pool,
        model.model_constants(cfg).kv_bits_per_token / 8.0,
    )


def session_nl_tokens(context_tokens, seen_tokens, nl_ratio):
    """K = ceil(rho (L - seen)): the NL summary of what the receiver has not seen."""
    xp = namespace(context_tokens, seen_tokens)
    return model.nl_tokens(xp.subtract(context_tokens, seen_tokens), nl_ratio)


# A session round's per-token terms and their scaling are the model's (sessions build on it).
unit_terms = model.unit_terms
scale_terms = model.scale_terms


def session_terms(
    consts: model.ModelConstants,
    state: SessionState,
    snr_db,
    compute_flops,
    mem_bw_bytes_per_s,
    load,
    context_tokens,
    new_tokens,
    nl_ratio,
    receiver_load,
) -> model.RoundTerms:
    """The terms of a session round: the sender prefills its ``new_tokens`` only, NL summarises
    the unseen tokens (:func:`session_nl_tokens`), KV carries the ``L - kv`` tokens the receiver
    lacks (:func:`unit_terms` scaled by :func:`scale_terms`).

    Arrays ``(..., N)`` as ``state``; ``receiver_load`` ``(...)``.
    """
    L = namespace(context_tokens).as_float(context_tokens)
    unit = unit_terms(consts, snr_db, compute_flops, mem_bw_bytes_per_s, load, new_tokens, receiver_load)
    return scale_terms(unit, session_nl_tokens(L, state.seen_tokens, nl_ratio), L - state.kv_tokens)


def session_terms_from_observation(consts: model.ModelConstants, obs: Mapping[str, np.ndarray]) -> model.RoundTerms:
    """The terms of the session round(s) a session observation describes: exactly what the session
    environment charges with ``csi_delay = 0`` (:func:`jmsra_env.model.terms_from_observation` for
    the constants of a session scenario)."""
    if not consts.session:
        consts = dataclasses.replace(consts, session=True)
    return model.terms_from_observation(consts, obs)


def transition(state: SessionState, media, context_tokens, round_index) -> tuple[SessionState, np.ndarray]:
    """The receiver's state after round ``round_index`` (scalar or ``(...)``) with ``media``.

    Every agent is then fully seen (``seen = L``); a KV sender's cache is resident
    (``kv = L``, ``last_kv = t``), an NL sender keeps its older prefix. Then, while the pool's
    usage exceeds its size, the cache with the oldest ``last_kv`` (ties: lowest index) is evicted:
    ``kv = seen = 0``. Returns ``(new state, evicted (..., N) bool)``.
    """
    xp = namespace(state.kv_tokens, context_tokens, media)
    L = xp.as_float(context_tokens)
    kv_send = xp.asarray(media) != model.NL
    kv = xp.where(kv_send, L, state.kv_tokens)
    shape = tuple(kv.shape)
    seen = xp.empty(shape)
    seen[...] = L
    t = xp.asarray(round_index, dtype=xp.int64)
    last = xp.where(kv_send, t[..., None] if t.ndim else t, state.last_kv_round)
    evicted = xp.zeros(shape, dtype=xp.bool_)
    n = shape[-1]
    agents = xp.arange(n)
    for _ in range(n):
        used = model.sum_over_agents(kv) * state.kv_bytes_per_token
        over = used > state.kv_pool_bytes
        if xp.host and not over.any():  # the usual case: one sum and one test (a GPU: no host
            break  # sync, all n passes, which change nothing once no pool is over)
        oldest = xp.argmin(xp.where(kv > 0.0, last, _NO_CACHE), axis=-1)  # first index on ties
        hit = over[..., None] & (agents == oldest[..., None])
        kv = xp.where(hit, 0.0, kv)
        seen = xp.where(hit, 0.0, seen)
        evicted |= hit
    new = SessionState(seen, kv, last, state.kv_pool_bytes, state.kv_bytes_per_token)
    if xp.host and not over.any():
        new.__dict__["pool_used_bytes"] = used  # the cached property, already computed
    return new, evicted


def never_rounds(cfg: ScenarioConfig) -> int:
    """``rounds_since_kv`` of an agent that never sent KV: ``episode_rounds + 1``, more than any
    real value (an episode's last observation is round ``episode_rounds``)."""
    return cfg.episode_rounds + 1


def rounds_since_kv(state: SessionState, round_index, never: int) -> np.ndarray:
    """Rounds since each agent's last KV message at round ``round_index``; ``never`` if none."""
    xp = namespace(state.last_kv_round)
    t = xp.asarray(round_index, dtype=xp.int64)
    since = (t[..., None] if t.ndim else t) - state.last_kv_round  # huge for NEVER_ROUND
    return xp.astype(xp.minimum(since, never), xp.float)


def state_from_observation(
    obs: Mapping[str, np.ndarray], consts: model.ModelConstants, never: int
) -> SessionState:
    """The receiver's state a session observation (one or a batch) describes, with the current
    round as round 0 (``last_kv_round = -rounds_since_kv``; only differences of rounds matter).

    ``never`` is the ``rounds_since_kv`` value of "never" (:func:`never_rounds`).
    """
    L = np.asarray(obs["context_tokens"], dtype=np.float64)
    since = np.asarray(obs["rounds_since_kv"], dtype=np.float64)
    pool = float(np.asarray(obs["kv_pool_bytes"]).reshape(-1)[0])
    kv = np.asarray(obs["kv_resident_tokens"], dtype=np.float64)
    return SessionState(
        L - np.asarray(obs["unseen_tokens"], dtype=np.float64),
        kv,
        np.where(since >= never, NEVER_ROUND, -since).astype(np.int64),
        pool,
        consts.kv_bits_per_token / 8.0,
    )
