"""Experts for sessions (docs/sessions.md), batched: one row per session.

=================  ===========================================================================
name               decision for the current round
=================  ===========================================================================
``jmsra``          myopic: :func:`jmsra_env.solvers.jmsra` on the session round's terms
``pool-aware``     JMSRA, then KV withheld from the senders whose new residency would overflow
                   the pool (it never overflows by its own choice); (P2) bandwidth re-solved
``lookahead``      rollout over ``H`` rounds on a forecast that uses only the observation
                   (channels and loads persist, ``dL`` and ``rho`` at the mean of their ranges):
                   each base policy of :class:`Candidates` (``jmsra``, ``pool-aware``,
                   ``nl-only``, and per agent ``pool-aware`` with that agent kept off KV or kept
                   on KV) is simulated for ``H`` rounds from the current state; the first
                   decision of the cheapest wins (receding horizon: re-planned every round)
``clairvoyant``    the same rollout handed the true future rounds (the world's draws, up to the
                   episode's end): a bound on what a causal rollout can gain from forecasting
``nl-only``        every agent NL, (P2) bandwidth
``kv-only``        every agent KV, (P2) bandwidth
=================  ===========================================================================

Every function takes the session round's :class:`~jmsra_env.model.RoundTerms` (batch ``(M,)``),
the receivers' :class:`~jmsra_env.session.SessionState` and the contexts ``(M, N)``, and returns a
:class:`~jmsra_env.solvers.Decision`; :class:`SessionExpertPolicy` wraps them as policies on the
session environments' observations. Nothing here imports the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from . import model, session, solvers
from .config import ScenarioConfig
from .expert_policy import ExpertPolicy
from .session import SessionState
from .solvers import Decision

__all__ = [
    "SESSION_EXPERT_NAMES",
    "SESSION_ONLY_EXPERTS",
    "BASE_POLICIES",
    "DEFAULT_HORIZON",
    "RoundInputs",
    "withhold_kv",
    "pool_aware",
    "Candidates",
    "base_decisions",
    "rollout",
    "persistent_forecast",
    "SessionExpertPolicy",
]

# The keys of a session observation the experts read besides the single-round ones.
_SESSION_KEYS = ("new_tokens", "unseen_tokens", "kv_resident_tokens", "rounds_since_kv", "kv_pool_used_fraction",
                 "kv_pool_bytes")
SESSION_EXPERT_NAMES = ("jmsra", "pool-aware", "lookahead", "clairvoyant", "nl-only", "kv-only")
SESSION_ONLY_EXPERTS = ("pool-aware", "lookahead", "clairvoyant")
BASE_POLICIES = ("jmsra", "pool-aware", "nl-only")  # the rollout's first candidates (ties: first)
# Rounds simulated by lookahead: at N = 4, H = 4 and 6 tie on the default pool, 6 is better on the
# large pool (a KV catch-up pays off over several rounds), 10 is worse and slower (the forecast
# drifts); docs/sessions.md.
DEFAULT_HORIZON = 6


@dataclass(frozen=True)
class RoundInputs:
    """The exogenous quantities of one future round, ``(M, N)`` (``receiver_load``: ``(M,)``)."""

    snr_db: np.ndarray
    compute_flops: np.ndarray
    mem_bw_bytes_per_s: np.ndarray
    load: np.ndarray
    context_tokens: np.ndarray
    new_tokens: np.ndarray
    nl_ratio: np.ndarray
    receiver_load: np.ndarray
    gain_hz: np.ndarray | None = None  # the true channel when it differs from the observed one

    def terms(self, consts: model.ModelConstants, state: SessionState) -> model.RoundTerms:
        t = session.session_terms(
            consts, state, self.snr_db, self.compute_flops, self.mem_bw_bytes_per_s, self.load,
            self.context_tokens, self.new_tokens, self.nl_ratio, self.receiver_load,
        )
        return t if self.gain_hz is None else replace(t, gain_hz=self.gain_hz)

    def tile(self, copies: int) -> RoundInputs:
        """The rows repeated ``copies`` times (candidate-major)."""
        def rep(x):
            return None if x is None else np.tile(x, (copies,) + (1,) * (np.ndim(x) - 1))
        return RoundInputs(*(rep(getattr(self, f)) for f in self.__dataclass_fields__))


def withhold_kv(media, state: SessionState, context_tokens) -> np.ndarray:
    """``media`` with KV withheld (set to NL) from the senders whose new residency would overflow
    the pool: senders are admitted in order of the bytes they add (fewest first, ties lowest
    index) while the pool, with every other cache as it is, still fits. Never evicts."""
    media = np.asarray(media).astype(np.int8)
    L = np.asarray(context_tokens, dtype=np.float64)
    send = media != model.NL
    added = np.where(send, (L - state.kv_tokens) * state.kv_bytes_per_token, np.inf)
    order = np.argsort(added, axis=-1, kind="stable")
    sorted_added = np.take_along_axis(added, order, axis=-1)
    room = state.kv_pool_bytes - state.pool_used_bytes
    fits_sorted = np.cumsum(np.where(np.isfinite(sorted_added), sorted_added, 0.0), axis=-1) <= room[..., None]
    fits = np.empty_like(fits_sorted)
    np.put_along_axis(fits, order, fits_sorted, axis=-1)
    return np.where(send & ~fits, model.NL, media).astype(np.int8)


def pool_aware(
    terms: model.RoundTerms,
    state: SessionState,
    context_tokens,
    jmsra_decision: Decision | None = None,
    kv_allowed: np.ndarray | None = None,
    kv_forced: np.ndarray | None = None,
) -> Decision:
    """JMSRA, then :func:`withhold_kv`; the bandwidth is re-solved where the media changed.

    ``kv_allowed`` ``(..., N)`` bool: agents that may send KV at all (default: every agent);
    ``kv_forced``: agents that send KV whenever the pool has room for them (default: none).
    """
    d = solvers.jmsra(terms) if jmsra_decision is None else jmsra_decision
    media = d.media
    if kv_forced is not None:
        media = np.where(kv_forced, model.KV, media).astype(np.int8)
    if kv_allowed is not None:
        media = np.where(kv_allowed, media, model.NL).astype(np.int8)
    media = withhold_kv(media, state, context_tokens)
    changed = (media != d.media).any(axis=-1)
    if not changed.any():
        return d
    b, _ = solvers.optimal_bandwidth(terms[changed], media[changed])
    bw = d.bandwidth_hz.copy()
    bw[changed] = b
    return Decision(media, bw, model.latency(terms, media, bw).latency_s)


@dataclass(frozen=True)
class Candidates:
    """The base policies a rollout compares, for ``N`` agents: :data:`BASE_POLICIES`, then for each
    agent ``i`` ``pool-aware`` with agent ``i`` kept off KV (it leaves the pool to the others),
    then for each agent ``i`` ``pool-aware`` with agent ``i`` on KV whenever the pool has room
    (a KV catch-up that a round-by-round rule never pays, repaid by cheaper deltas later).
    ``exclusions=False``: :data:`BASE_POLICIES` only."""

    kinds: tuple[str, ...]  # "jmsra" | "pool-aware" | "nl-only" per candidate
    kv_allowed: np.ndarray  # (C, N) bool
    kv_forced: np.ndarray  # (C, N) bool

    @classmethod
    def for_agents(cls, n: int, exclusions: bool = True) -> Candidates:
        kinds = list(BASE_POLICIES)
        allowed = [np.ones(n, dtype=bool)] * len(kinds)
        forced = [np.zeros(n, dtype=bool)] * len(kinds)
        if exclusions and n > 1:
            for i in range(n):
                kinds.append("pool-aware")
                allowed.append(np.arange(n) != i)
                forced.append(np.zeros(n, dtype=bool))
            for i in range(n):
                kinds.append("pool-aware")
                allowed.append(np.ones(n, dtype=bool))
                forced.append(np.arange(n) == i)
        return cls(tuple(kinds), np.array(allowed), np.array(forced))

    def __len__(self) -> int:
        return len(self.kinds)


def base_decisions(
    terms: model.RoundTerms, state: SessionState, context_tokens, candidates: Candidates
) -> tuple[np.ndarray, np.ndarray]:
    """The ``candidates`` on a candidate-major batch of ``C x M`` rows (candidate ``c`` owns rows
    ``c M .. (c + 1) M - 1``); returns ``(media, bandwidth_hz)``."""
    c = len(candidates)
    m = terms.batch_shape[0] // c
    kind = np.repeat(np.array(candidates.kinds), m)
    allowed = np.repeat(candidates.kv_allowed, m, axis=0)
    forced = np.repeat(candidates.kv_forced, m, axis=0)
    L = np.asarray(context_tokens)
    media = np.empty((c * m, terms.n_agents), dtype=np.int8)
    bw = np.empty((c * m, terms.n_agents))
    nl = np.flatnonzero(kind == "nl-only")
    d = solvers.nl_only(terms[nl])
    media[nl], bw[nl] = d.media, d.bandwidth_hz
    greedy = np.flatnonzero(kind != "nl-only")
    j = solvers.jmsra(terms[greedy])  # one solve serves the myopic and every pool-aware row
    media[greedy], bw[greedy] = j.media, j.bandwidth_hz
    pa = kind[greedy] == "pool-aware"
    rows = greedy[pa]
    d = pool_aware(terms[rows], state[rows], L[rows], Decision(j.media[pa], j.bandwidth_hz[pa], j.latency_s[pa]),
                   allowed[rows], forced[rows])
    media[rows], bw[rows] = d.media, d.bandwidth_hz
    return media, bw


def _tile_state(state: SessionState, copies: int) -> SessionState:
    def rep(x):
        return np.tile(x, (copies, 1))
    return SessionState(
        rep(state.seen_tokens), rep(state.kv_tokens), rep(state.last_kv_round),
        state.kv_pool_bytes, state.kv_bytes_per_token,
    )


def rollout(
    consts: model.ModelConstants,
    terms: model.RoundTerms,
    state: SessionState,
    context_tokens,
    future: list[RoundInputs],
    round_index=0,
    counted: np.ndarray | None = None,
    candidates: Candidates | None = None,
    exclusions: bool = True,
) -> Decision:
    """Rollout of the ``candidates`` (default :meth:`Candidates.for_agents`) over the current round
    (``terms``, exact) and the ``future`` rounds: each is simulated from ``state`` through
    :func:`jmsra_env.session.transition`; per row the first decision of the one with the least
    total latency is returned (ties: the first candidate, myopic ``jmsra``).

    ``counted`` ``(len(future), M)`` bool: whether a future round counts for a row (rounds past
    the episode's end do not); ``round_index`` is the current round in ``state``'s numbering.
    """
    cands = Candidates.for_agents(terms.n_agents, exclusions) if candidates is None else candidates
    c = len(cands)
    m = terms.batch_shape[0]
    L = np.tile(np.asarray(context_tokens, dtype=np.float64), (c, 1))
    st = _tile_state(state, c)
    t_all = model.concat_terms([terms] * c)
    media0, bw0 = base_decisions(t_all, st, L, cands)
    cost = model.latency(t_all, media0, bw0).latency_s
    t0 = np.asarray(round_index)
    t_rows = np.tile(t0, c) if t0.ndim else t0
    st, _ = session.transition(st, media0, L, t_rows)
    for h, inputs in enumerate(future, start=1):
        tiled = inputs.tile(c)
        t_h = tiled.terms(consts, st)
        media, bw = base_decisions(t_h, st, tiled.context_tokens, cands)
        lat = model.latency(t_h, media, bw).latency_s
        if counted is not None:
            lat = np.where(np.tile(counted[h - 1], c), lat, 0.0)
        cost = cost + lat
        st, _ = session.transition(st, media, tiled.context_tokens, t_rows + h)
    best = np.argmin(cost.reshape(c, m), axis=0)  # first candidate on ties
    rows = best * m + np.arange(m)
    media, bw = media0[rows], bw0[rows]
    return Decision(media, bw, model.latency(terms, media, bw).latency_s)


def persistent_forecast(obs, cfg: ScenarioConfig, horizon: int) -> list[RoundInputs]:
    """A forecast of rounds ``1 .. horizon - 1`` from a (batched) observation alone: channels,
    devices and loads stay as observed; each round adds the mean of the new-tokens range and the
    NL ratio is the mean of its range (both are i.i.d. uniform draws in the world process)."""
    ss, wl = cfg.session, cfg.workload
    dL = 0.5 * (ss.new_tokens_min + ss.new_tokens_max)
    rho = 0.5 * (wl.nl_ratio_min + wl.nl_ratio_max)
    L = np.asarray(obs["context_tokens"], dtype=np.float64)
    snr = np.asarray(obs["snr_db"], dtype=np.float64)
    rx = np.asarray(obs["receiver_load"], dtype=np.float64)[..., 0]
    out = []
    for h in range(1, horizon):
        out.append(
            RoundInputs(
                snr, np.asarray(obs["compute_flops"]), np.asarray(obs["mem_bw_bytes_per_s"]),
                np.asarray(obs["load"]), L + h * dL, np.full_like(L, dL), np.full_like(L, rho), rx,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# As policies on the session environments


def _batch_of_one(d: Decision) -> Decision:
    return Decision(d.media[0], d.bandwidth_hz[0], d.latency_s[0])


class SessionExpertPolicy(ExpertPolicy):
    """A session expert (one of :data:`SESSION_EXPERT_NAMES`) acting on session observations.

    It decides from the observation alone (:func:`jmsra_env.model.terms_from_observation` and
    :func:`jmsra_env.session.state_from_observation`), except ``clairvoyant``, which also reads the
    true future rounds through ``future(horizon) -> (rounds, counted)`` (given by
    :func:`jmsra_env.policies.make_policy` from the environment).
    """

    def __init__(
        self,
        name: str,
        config: ScenarioConfig,
        action_form: str = "dict",
        horizon: int = DEFAULT_HORIZON,
        future=None,
        *,
        action_encoding: str | None = None,
    ):
        if name not in SESSION_EXPERT_NAMES:
            raise ValueError(f"unknown session expert {name!r}; valid names: {', '.join(SESSION_EXPERT_NAMES)}")
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1; got {horizon!r}")
        if name == "clairvoyant" and future is None:
            raise ValueError("the clairvoyant expert needs the environment (make_policy('clairvoyant', env))")
        super().__init__("jmsra", config, action_form, action_encoding=action_encoding)
        self.name = name
        self.horizon = int(horizon)
        self.never = session.never_rounds(config)
        self._future = future

    @property
    def kind(self) -> str:
        """For the evaluation: ``bound`` (clairvoyant reads the future), ``baseline`` (one medium
        for all) or ``expert``."""
        if self.name == "clairvoyant":
            return "bound"
        return "baseline" if self.name in ("nl-only", "kv-only") else "expert"

    def __repr__(self) -> str:
        return f"SessionExpertPolicy({self.name!r}, n_agents={self.config.n_agents}, horizon={self.horizon})"

    def decide(self, obs) -> Decision:
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a session environment's Dict observation; got {type(obs).__name__}")
        missing = [k for k in _SESSION_KEYS if k not in obs]
        if missing:
            raise ValueError(f"obs must be a session environment's Dict observation; it lacks {missing}")
        batched = np.ndim(obs["snr_db"]) == 2
        if not batched:
            obs = {k: np.asarray(v)[None] for k, v in obs.items()}
        d = self._decide_batch(obs)
        return d if batched else _batch_of_one(d)

    def _decide_batch(self, obs) -> Decision:
        terms = model.terms_from_observation(self.consts, obs)
        if self.name in ("jmsra", "nl-only", "kv-only"):
            return solvers.solve(self.name, terms)
        state = session.state_from_observation(obs, self.consts, self.never)
        L = np.asarray(obs["context_tokens"], dtype=np.float64)
        if self.name == "pool-aware":
            return pool_aware(terms, state, L)
        if self.name == "lookahead":
            return rollout(self.consts, terms, state, L, persistent_forecast(obs, self.config, self.horizon))
        future, counted = self._future(self.horizon)
        return rollout(self.consts, terms, state, L, future, 0, counted)
