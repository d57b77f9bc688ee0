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
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import model
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
        m = np.asarray(mask, dtype=bool)[..., None]
        return SessionState(
            np.where(m, other.seen_tokens, self.seen_tokens),
            np.where(m, other.kv_tokens, self.kv_tokens),
            np.where(m, other.last_kv_round, self.last_kv_round),
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
    cfg: ScenarioConfig, batch_shape: tuple[int, ...] = (), kv_pool_bytes: float | None = None
) -> SessionState:
    """An empty receiver (nothing seen, nothing resident) for every session of the batch.

    ``kv_pool_bytes`` defaults to the scenario's (``cfg.kv_pool_bytes``).
    """
    shape = (*batch_shape, cfg.n_agents)
    pool = cfg.kv_pool_bytes if kv_pool_bytes is None else float(kv_pool_bytes)
    if not pool > 0.0:  # inf allowed: an unbounded pool
        raise ValueError(f"kv_pool_bytes must be > 0; got {kv_pool_bytes!r}")
    return SessionState(
        np.zeros(shape),
        np.zeros(shape),
        np.full(shape, NEVER_ROUND, dtype=np.int64),
        pool,
        model.model_constants(cfg).kv_bits_per_token / 8.0,
    )


def session_nl_tokens(context_tokens, seen_tokens, nl_ratio):
    """K = ceil(rho (L - seen)): the NL summary of what the receiver has not seen."""
    return model.nl_tokens(np.subtract(context_tokens, seen_tokens), nl_ratio)


def unit_terms(
    consts: model.ModelConstants, snr_db, compute_flops, mem_bw_bytes_per_s, load, new_tokens, receiver_load
) -> model.RoundTerms:
    """A session round's terms per token: :func:`jmsra_env.model.round_terms` with the sender's
    prefill of its ``new_tokens`` and *one* token of NL summary and of KV delta.

    Everything but the prefill, the answer and the channel is linear in those token counts, so
    :func:`scale_terms` turns these into the round's terms for any receiver state. The
    environments compute them once per chunk of rounds (they do not depend on the actions).
    """
    one = np.ones(np.shape(new_tokens))
    return model.round_terms(
        consts, snr_db, compute_flops, mem_bw_bytes_per_s, load, one, one, receiver_load,
        prefill_tokens=new_tokens, kv_tokens=one,
    )


def scale_terms(unit: model.RoundTerms, nl_tokens_, kv_delta_tokens) -> model.RoundTerms:
    """The terms of a round from its :func:`unit_terms`: NL terms times the summary's ``K``
    tokens, KV terms times the ``L - kv`` tokens the receiver lacks (arrays ``(..., N)``)."""
    tokens = np.empty(unit.extra_compute_s.shape)
    tokens[..., 0] = nl_tokens_
    tokens[..., 1] = kv_delta_tokens
    return model.RoundTerms(
        unit.prefill_s,
        unit.extra_compute_s * tokens,
        unit.payload_bits * tokens,
        unit.receiver_s * tokens,
        unit.answer_s,
        unit.gain_hz,
        unit.bandwidth_hz,
        unit.latency_cap_s,
    )


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
    L = np.asarray(context_tokens, dtype=np.float64)
    unit = unit_terms(consts, snr_db, compute_flops, mem_bw_bytes_per_s, load, new_tokens, receiver_load)
    return scale_terms(unit, session_nl_tokens(L, state.seen_tokens, nl_ratio), L - state.kv_tokens)


def session_terms_from_observation(consts: model.ModelConstants, obs: Mapping[str, np.ndarray]) -> model.RoundTerms:
    """The terms of the session round(s) a session observation describes (what
    :func:`jmsra_env.model.terms_from_observation` returns for one): exactly what the session
    environment charges with ``csi_delay = 0``."""
    unit = unit_terms(
        consts, obs["snr_db"], obs["compute_flops"], obs["mem_bw_bytes_per_s"], obs["load"],
        obs["new_tokens"], np.asarray(obs["receiver_load"], dtype=np.float64)[..., 0],
    )
    kv_delta = np.subtract(obs["context_tokens"], obs["kv_resident_tokens"], dtype=np.float64)
    return scale_terms(unit, obs["nl_tokens"], kv_delta)


def transition(state: SessionState, media, context_tokens, round_index) -> tuple[SessionState, np.ndarray]:
    """The receiver's state after round ``round_index`` (scalar or ``(...)``) with ``media``.

    Every agent is then fully seen (``seen = L``); a KV sender's cache is resident
    (``kv = L``, ``last_kv = t``), an NL sender keeps its older prefix. Then, while the pool's
    usage exceeds its size, the cache with the oldest ``last_kv`` (ties: lowest index) is evicted:
    ``kv = seen = 0``. Returns ``(new state, evicted (..., N) bool)``.
    """
    L = np.asarray(context_tokens, dtype=np.float64)
    kv_send = np.asarray(media) != model.NL
    kv = np.where(kv_send, L, state.kv_tokens)
    shape = kv.shape
    seen = np.empty(shape)
    seen[...] = L
    t = np.asarray(round_index, dtype=np.int64)
    last = np.where(kv_send, t[..., None] if t.ndim else t, state.last_kv_round)
    evicted = np.zeros(shape, dtype=bool)
    n = shape[-1]
    agents = np.arange(n)
    for _ in range(n):
        used = model.sum_over_agents(kv) * state.kv_bytes_per_token
        over = used > state.kv_pool_bytes
        if not over.any():  # the usual case: one sum and one test
            break
        oldest = np.argmin(np.where(kv > 0.0, last, _NO_CACHE), axis=-1)  # first index on ties
        hit = over[..., None] & (agents == oldest[..., None])
        kv = np.where(hit, 0.0, kv)
        seen = np.where(hit, 0.0, seen)
        evicted |= hit
    new = SessionState(seen, kv, last, state.kv_pool_bytes, state.kv_bytes_per_token)
    if not over.any():
        new.__dict__["pool_used_bytes"] = used  # the cached property, already computed
    return new, evicted


def never_rounds(cfg: ScenarioConfig) -> int:
    """``rounds_since_kv`` of an agent that never sent KV: ``episode_rounds + 1``, more than any
    real value (an episode's last observation is round ``episode_rounds``)."""
    return cfg.episode_rounds + 1


def rounds_since_kv(state: SessionState, round_index, never: int) -> np.ndarray:
    """Rounds since each agent's last KV message at round ``round_index``; ``never`` if none."""
    t = np.asarray(round_index, dtype=np.int64)
    since = (t[..., None] if t.ndim else t) - state.last_kv_round  # huge for NEVER_ROUND
    return np.minimum(since, never).astype(np.float64)


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
