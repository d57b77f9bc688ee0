"""Experts and baselines for the decision problem (docs/model.md), batched from the start.

Every solver takes a :class:`~jmsra_env.model.RoundTerms` with any batch shape ``(...)`` (a single
round is a batch of shape ``()``) and returns a :class:`Decision` with media ``(..., N)``,
bandwidth ``(..., N)`` in Hz and the latency ``(...)`` the environment would charge for it
(:func:`jmsra_env.model.latency`, capped). All rounds of a batch are solved together with NumPy
array operations; each round's result does not depend on the other rounds of the batch.

=====================  ========================================================================
name                   decision
=====================  ========================================================================
``optimal``            exhaustive optimum: all ``2^N`` media vectors, each with optimal (P2)
``jmsra``              bi-directional greedy (JMSRA) with optimal (P2) bandwidth
``nl-only``            every agent NL, optimal (P2) bandwidth
``kv-only``            every agent KV, optimal (P2) bandwidth
``nl-only-equal``      every agent NL, equal split ``B / N``
``kv-only-equal``      every agent KV, equal split ``B / N``
``threshold-equal``    per agent the single-agent closed form on ``B / N``, equal split
``random``             random media, Dirichlet(1, ..., 1) split
=====================  ========================================================================

(P2), bandwidth for fixed media, is solved by :mod:`jmsra_env.bandwidth` (re-exported here as
:func:`optimal_bandwidth`). This module never imports the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import model
from .bandwidth import FlatTerms, flat_terms, optimal_bandwidth, solve_media
from .model import RoundTerms

__all__ = [
    "EXPERT_NAMES",
    "Decision",
    "SwitchingThreshold",
    "optimal_bandwidth",
    "jmsra",
    "exhaustive",
    "nl_only",
    "kv_only",
    "nl_only_equal",
    "kv_only_equal",
    "threshold_equal",
    "random_policy",
    "single_agent_threshold",
    "solve",
    "check_name",
    "MAX_EXHAUSTIVE_AGENTS",
]

EXPERT_NAMES: tuple[str, ...] = (
    "optimal",
    "jmsra",
    "nl-only",
    "kv-only",
    "nl-only-equal",
    "kv-only-equal",
    "threshold-equal",
    "random",
)

MAX_EXHAUSTIVE_AGENTS = 16

# Two candidate latencies within this relative distance are a tie (lowest index wins); a greedy
# switch must improve by more than this. Keeps the greedy deterministic under rounding noise.
_TIE_RTOL = 1e-12
# Bound on the number of (row x agent) elements one (P2) call handles at once (memory).
_CHUNK_ELEMENTS = 1 << 19
# JMSRA on small batches walks a table of all 2^N media vectors' (P2) (rounds x 2^N rows at most).
_TABLE_MAX_AGENTS = 8
_TABLE_ROWS = 1024


@dataclass(frozen=True)
class Decision:
    """An expert's decision for a batch of rounds and the latency the environment charges for it."""

    media: np.ndarray  # (..., N) int8: 0 = NL, 1 = KV
    bandwidth_hz: np.ndarray  # (..., N) float64, sums to B
    latency_s: np.ndarray  # (...) float64: min(T, latency_cap_s), as model.latency computes it


def _decision(terms: RoundTerms, media, bandwidth_hz) -> Decision:
    media = np.asarray(media).astype(np.int8)
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    return Decision(media, b, model.latency(terms, media, b).latency_s)


# ---------------------------------------------------------------------------------------------
# JMSRA: bi-directional greedy


def _first_within_tie(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row the minimum and the lowest index within ``_TIE_RTOL`` of it (``values`` (P, N))."""
    vmin = values.min(axis=-1)
    j = np.argmax(values <= vmin[:, None] * (1.0 + _TIE_RTOL), axis=-1)
    return vmin, j


def jmsra(terms: RoundTerms) -> Decision:
    """JMSRA (docs/model.md): from all-NL switch to KV the agent whose switch lowers (P2) the
    most until no switch helps; the same from all-KV towards NL; return the better of the two.

    Ties (within 1e-12 relative) go to the lowest agent index and to the all-NL start. A large
    batch runs the greedy batched: each iteration solves every candidate of every round and
    direction in one (P2) call (skipping the switches that a lower bound rules out). A small one
    (``M 2^N <= 1024``, ``N <= 8``: a single round, say) solves the (P2) of every media vector in
    one call and walks the greedy over that table, which costs one call instead of one per step.
    """
    f = flat_terms(terms)
    M, N = f.A.shape[0], f.n
    if N <= _TABLE_MAX_AGENTS and M << N <= _TABLE_ROWS:
        media, b = _jmsra_by_table(f)
    else:
        media, b = _jmsra_batched(f)
    return _decision(terms, media.reshape(*f.batch_shape, N), b.reshape(*f.batch_shape, N))


def _greedy_walk(values: list, n: int, start: int) -> tuple[int, float]:
    """One direction of the greedy over a table of (P2) latencies by media code (bit ``i`` set:
    agent ``i`` on KV), from code ``start`` (0: all NL, ``2^n - 1``: all KV). Returns the final
    code and its latency; the same choices as :func:`_jmsra_batched`, tie rule included."""
    code, val = start, values[start]
    left = list(range(n))  # agents still on the starting medium, lowest index first
    while left:
        cand = [values[code ^ (1 << i)] for i in left]
        vmin = min(cand)
        if vmin != vmin or any(c != c for c in cand) or not vmin < val * (1.0 - _TIE_RTOL):
            break  # no switch helps (NaN: as NumPy's comparisons in the batched greedy)
        bound = vmin * (1.0 + _TIE_RTOL)
        k = next(k for k, c in enumerate(cand) if c <= bound)  # the lowest index within the tie
        code ^= 1 << left.pop(k)
        val = vmin
    return code, val


def _jmsra_by_table(f: FlatTerms) -> tuple[np.ndarray, np.ndarray]:
    """JMSRA on a small batch: every media vector's (P2) in one call, then the greedy walks."""
    M, N = f.A.shape[0], f.n
    n_codes = 1 << N
    b, v = solve_media(f, np.repeat(np.arange(M), n_codes), np.tile(_media_of(np.arange(n_codes), N), (M, 1)))
    b = b.reshape(M, n_codes, N)
    table = v.reshape(M, n_codes).tolist()
    chosen = np.empty(M, dtype=np.int64)
    for m, values in enumerate(table):
        nl_code, nl_val = _greedy_walk(values, N, 0)
        kv_code, kv_val = _greedy_walk(values, N, n_codes - 1)
        chosen[m] = kv_code if kv_val < nl_val * (1.0 - _TIE_RTOL) else nl_code
    return _media_of(chosen, N), b[np.arange(M), chosen]


def _jmsra_batched(f: FlatTerms) -> tuple[np.ndarray, np.ndarray]:
    """JMSRA on a batch: each greedy iteration is one (P2) call over every round and direction."""
    M, N = f.A.shape[0], f.n
    P = 2 * M  # (round, direction) pairs; direction d starts from all-d and switches to 1 - d
    pair_round = np.repeat(np.arange(M), 2)
    pair_dir = np.tile(np.array([0, 1], dtype=np.int8), M)
    x = np.repeat(pair_dir[:, None], N, axis=1)  # (P, N) current media
    val = np.empty(P)
    bw = np.empty((P, N))

    t_alone = _finish_alone_s(f)  # lower bounds for pruning switches

    # Iteration 0: both starting points and every single switch from them, in one call.
    cand_media = np.repeat(x[:, None, :], N + 1, axis=1)  # (P, N + 1, N); slot 0 = no switch
    ar = np.arange(N)
    cand_media[:, ar + 1, ar] ^= 1
    b_all, v_all = solve_media(f, np.repeat(pair_round, N + 1), cand_media.reshape(-1, N))
    b_all = b_all.reshape(P, N + 1, N)
    v_all = v_all.reshape(P, N + 1)
    val[:] = v_all[:, 0]
    bw[:] = b_all[:, 0]
    cand_val = v_all[:, 1:]
    active = np.arange(P)
    cand_b = b_all[:, 1:].reshape(-1, N)  # allocations of the candidate rows
    cand_pos = np.arange(P * N).reshape(P, N)  # (pair, agent switched) -> row of cand_b
    while True:
        vmin, j = _first_within_tie(cand_val)
        better = vmin < val[active] * (1.0 - _TIE_RTOL)
        if not better.any():
            break
        p = active[better]
        jb = j[better]
        x[p, jb] ^= 1
        val[p] = vmin[better]
        bw[p] = cand_b[cand_pos[better, jb]]
        # Pairs that improved and still have an agent on their starting medium go on.
        left = x[p] == pair_dir[p, None]
        p = p[left.any(axis=-1)]
        if p.size == 0:
            break
        left = x[p] == pair_dir[p, None]
        pi, ji = np.nonzero(left)
        rows_media = x[p[pi]].copy()
        rows_media[np.arange(pi.size), ji] ^= 1
        # A switch whose lower bound (every agent alone on the whole band) is not below the current
        # value cannot improve: skip its (P2). Exact: such a value could not even tie the best.
        rr = pair_round[p[pi]]
        lb = (
            model.select_medium(t_alone[rr], rows_media).max(axis=-1)
            + model.select_medium(f.R[rr], rows_media).sum(axis=-1)
            + f.answer[rr]
        )
        may = lb < val[p[pi]]
        if not may.any():
            break
        pi, ji, rr, rows_media = pi[may], ji[may], rr[may], rows_media[may]
        # Only switches that beat the current value matter: the others come back as inf early.
        b_r, v_r = solve_media(f, rr, rows_media, below=val[p[pi]] * (1.0 - _TIE_RTOL))
        cand_val = np.full((p.size, N), np.inf)
        cand_val[pi, ji] = v_r
        cand_b = b_r
        cand_pos = np.full((p.size, N), -1)
        cand_pos[pi, ji] = np.arange(pi.size)
        active = p

    val2 = val.reshape(M, 2)
    pick = (val2[:, 1] < val2[:, 0] * (1.0 - _TIE_RTOL)).astype(np.int64)
    chosen = 2 * np.arange(M) + pick
    return x[chosen], bw[chosen]


# ---------------------------------------------------------------------------------------------
# Exhaustive optimum


def _media_of(codes: np.ndarray, n: int) -> np.ndarray:
    """Media vectors of candidate codes: agent i is KV when bit i of the code is set."""
    return ((codes[:, None] >> np.arange(n)) & 1).astype(np.int8)


def _finish_alone_s(f: FlatTerms) -> np.ndarray:
    """Each agent's finish time alone on the whole band, per medium (M, N, 2): a lower bound."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return f.A + model.transmission_time_s(f.D, model.rate_bps(f.B, f.a[..., None]))


def _lower_bounds(t_alone: np.ndarray, R: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """A lower bound on the latency of every media vector, ``(m, 2^N)`` in code order:
    ``max_i t_alone_i(x_i) + sum_i R_i(x_i) + G tau``, built one agent (one code bit) at a time."""
    m, n = t_alone.shape[:2]
    mx = np.full((m, 1), -np.inf)
    rs = np.zeros((m, 1))
    for i in range(n):
        mx = np.concatenate([np.maximum(mx, t_alone[:, i, 0:1]), np.maximum(mx, t_alone[:, i, 1:2])], axis=1)
        rs = np.concatenate([rs + R[:, i, 0:1], rs + R[:, i, 1:2]], axis=1)
    return mx + rs + answer[:, None]


def exhaustive(terms: RoundTerms) -> Decision:
    """The exact optimum of (P1) over all ``2^N`` media vectors, each with optimal (P2).

    Raises ``ValueError`` for ``N > 16`` (65,536 candidates per round). Best-first branch and
    bound: the candidates of a round are taken in order of a lower bound on their latency (every
    agent alone on the whole band), in growing blocks, and a candidate whose bound exceeds the
    best latency found by more than 1e-9 is not solved — it could neither win nor tie. Ties
    (within 1e-12 relative) go to the lowest code (bit ``i`` of the code = agent ``i`` on KV).
    """
    n = terms.n_agents
    if n > MAX_EXHAUSTIVE_AGENTS:
        raise ValueError(
            f"the exhaustive optimum enumerates 2^N media vectors and is limited to N <= "
            f"{MAX_EXHAUSTIVE_AGENTS} agents; got N = {n} (use 'jmsra' for larger teams)"
        )
    f = flat_terms(terms)
    M = f.A.shape[0]
    n_cand = 1 << n
    t_alone = _finish_alone_s(f)
    best_code = np.zeros(M, dtype=np.int64)
    best_b = np.empty((M, n))
    round_block = max(1, _CHUNK_ELEMENTS // n_cand)
    for m0 in range(0, M, round_block):
        rounds = np.arange(m0, min(M, m0 + round_block))
        lb = _lower_bounds(t_alone[rounds], f.R[rounds], f.answer[rounds])
        order = np.argsort(lb, axis=1, kind="stable")  # equal bounds: lower code first
        lb = np.take_along_axis(lb, order, axis=1)
        best_v = np.full(rounds.size, np.inf)
        code = np.full(rounds.size, n_cand, dtype=np.int64)
        r0, size = 0, 16
        while r0 < n_cand:
            r1 = min(n_cand, r0 + size)
            keep = lb[:, r0:r1] < best_v[:, None] * (1.0 + 1e-9)
            if r0 == 0:
                keep[:] = True  # the first block always sets an incumbent (even an infinite one)
            if not keep.any():
                break  # the rest of every round's list is bounded out too (sorted)
            ri, ci = np.nonzero(keep)
            codes = order[ri, r0 + ci]
            below = None if r0 == 0 else best_v[ri] * (1.0 + 1e-9)  # only rows that may win or tie
            b, v = _solve_codes(f, rounds[ri], codes, n, below)
            V = np.full(keep.shape, np.inf)
            V[ri, ci] = np.where(np.isnan(v), np.inf, v)
            C = np.full(keep.shape, n_cand, dtype=np.int64)
            C[ri, ci] = codes
            vmin = V.min(axis=1)
            # lowest code within the tie window of the block's best, for every round
            cmin = np.where(V <= vmin[:, None] * (1.0 + _TIE_RTOL), C, n_cand).min(axis=1)
            better = vmin < best_v * (1.0 - _TIE_RTOL)
            tie = ~better & (vmin <= best_v * (1.0 + _TIE_RTOL)) & (cmin < code)
            if r0 == 0:
                better[:] = True
            upd = (better | tie) & (cmin < n_cand)
            if upd.any():
                # the allocation of the chosen row: rows are (round, code) pairs
                pos = np.full(keep.shape, -1, dtype=np.int64)
                pos[ri, ci] = np.arange(ri.size)
                pick = np.argmax((C == cmin[:, None]) & (pos >= 0), axis=1)
                u = np.flatnonzero(upd)
                best_v[u] = np.minimum(vmin[u], np.where(better[u], np.inf, best_v[u]))
                code[u] = cmin[u]
                best_code[rounds[u]] = cmin[u]
                best_b[rounds[u]] = b[pos[u, pick[u]]]
            r0, size = r1, size * 4
    media = _media_of(best_code, n).reshape(*f.batch_shape, n)
    return _decision(terms, media, best_b.reshape(*f.batch_shape, n))


def _solve_codes(f: FlatTerms, rounds: np.ndarray, codes: np.ndarray, n: int, below=None):
    """(P2) for rows ``(rounds[k], media of codes[k])``, in pieces of bounded memory."""
    step = max(1, _CHUNK_ELEMENTS // n)
    if rounds.size <= step:
        return solve_media(f, rounds, _media_of(codes, n), below)
    b = np.empty((rounds.size, n))
    v = np.empty(rounds.size)
    for s in range(0, rounds.size, step):
        sl = slice(s, s + step)
        b[sl], v[sl] = solve_media(f, rounds[sl], _media_of(codes[sl], n), None if below is None else below[sl])
    return b, v


# ---------------------------------------------------------------------------------------------
# Baselines


def _uniform_media(terms: RoundTerms, medium: int) -> np.ndarray:
    return np.full((*terms.batch_shape, terms.n_agents), medium, dtype=np.int8)


def _equal_split(terms: RoundTerms) -> np.ndarray:
    n = terms.n_agents
    return np.full((*terms.batch_shape, n), terms.bandwidth_hz / n)


def nl_only(terms: RoundTerms) -> Decision:
    """Every agent sends NL tokens; optimal (P2) bandwidth."""
    x = _uniform_media(terms, model.NL)
    return _decision(terms, x, optimal_bandwidth(terms, x)[0])


def kv_only(terms: RoundTerms) -> Decision:
    """Every agent sends its KV cache; optimal (P2) bandwidth."""
    x = _uniform_media(terms, model.KV)
    return _decision(terms, x, optimal_bandwidth(terms, x)[0])


def nl_only_equal(terms: RoundTerms) -> Decision:
    """Every agent sends NL tokens; equal bandwidth ``B / N``."""
    return _decision(terms, _uniform_media(terms, model.NL), _equal_split(terms))


def kv_only_equal(terms: RoundTerms) -> Decision:
    """Every agent sends its KV cache; equal bandwidth ``B / N``."""
    return _decision(terms, _uniform_media(terms, model.KV), _equal_split(terms))


@dataclass(frozen=True)
class SwitchingThreshold:
    """Single-agent closed form (docs/model.md), per agent ``(..., N)``.

    An agent alone on bandwidth ``bandwidth_hz`` is faster with KV exactly when its rate exceeds
    ``rate_bps`` (``inf``: never), equivalently when its SNR on that bandwidth,
    ``a / bandwidth_hz``, exceeds ``snr`` (``snr_db`` in dB).
    """

    rate_bps: np.ndarray  # r* = (D(1) - D(0)) / (C(0) - C(1) + R(0) - R(1)); inf when den <= 0
    snr: np.ndarray  # 2^(r* / b) - 1 (linear)
    snr_db: np.ndarray  # 10 log10(snr)
    bandwidth_hz: float
    kv_preferred: np.ndarray  # r(b) > r*: the agent's own channel on ``bandwidth_hz`` favours KV


def single_agent_threshold(terms: RoundTerms, bandwidth_hz: float | None = None) -> SwitchingThreshold:
    """Switching rate ``r* = (D(1) - D(0)) / (C(0) + R(0) - R(1))`` and SNR threshold per agent.

    With one agent on bandwidth ``b`` (default the whole band ``B``) the latency difference
    NL - KV is ``C(0) + R(0) - R(1) - (D(1) - D(0)) / r(b)`` (``C(1) = 0``; the common prefill
    and answer cancel), so KV wins exactly when ``r(b) > r*``; never when the denominator is not
    positive (assumes ``D(1) >= D(0)``, true for every LLM profile: a KV cache is far larger than
    its token ids). The SNR threshold on ``b`` is ``2^(r* / b) - 1``.
    """
    b = float(terms.bandwidth_hz if bandwidth_hz is None else bandwidth_hz)
    if not b > 0.0:
        raise ValueError(f"bandwidth_hz must be > 0; got {bandwidth_hz!r}")
    D, C, R = terms.payload_bits, terms.extra_compute_s, terms.receiver_s
    num = D[..., 1] - D[..., 0]
    den = (C[..., 0] - C[..., 1]) + (R[..., 0] - R[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        r_star = np.where(den > 0.0, np.maximum(num, 0.0) / np.where(den > 0.0, den, 1.0), np.inf)
        snr = model.required_snr(r_star, b)
        snr_db = 10.0 * np.log10(snr)
    rate = model.rate_bps(b, terms.gain_hz)
    return SwitchingThreshold(r_star, snr, snr_db, b, rate > r_star)


def threshold_equal(terms: RoundTerms) -> Decision:
    """Equal split ``B / N``; each agent picks its medium by the single-agent closed form on it."""
    th = single_agent_threshold(terms, terms.bandwidth_hz / terms.n_agents)
    return _decision(terms, th.kv_preferred.astype(np.int8), _equal_split(terms))


def random_policy(terms: RoundTerms, rng: np.random.Generator | None = None) -> Decision:
    """Random media (fair coin per agent) and a Dirichlet(1, ..., 1) bandwidth split."""
    rng = np.random.default_rng() if rng is None else rng
    shape = (*terms.batch_shape, terms.n_agents)
    media = rng.integers(0, 2, size=shape).astype(np.int8)
    shares = rng.dirichlet(np.ones(terms.n_agents), size=terms.batch_shape or None)
    return _decision(terms, media, terms.bandwidth_hz * shares)


# ---------------------------------------------------------------------------------------------
# Dispatch

_SOLVERS = {
    "optimal": exhaustive,
    "jmsra": jmsra,
    "nl-only": nl_only,
    "kv-only": kv_only,
    "nl-only-equal": nl_only_equal,
    "kv-only-equal": kv_only_equal,
    "threshold-equal": threshold_equal,
}


def check_name(name: str) -> str:
    """``name`` if it is an expert name, else a ``ValueError`` that lists the valid ones."""
    if name not in EXPERT_NAMES:
        raise ValueError(f"unknown expert {name!r}; valid names: {', '.join(EXPERT_NAMES)}")
    return name


def solve(name: str, terms: RoundTerms, rng: np.random.Generator | None = None) -> Decision:
    """The decision of expert ``name`` (one of :data:`EXPERT_NAMES`) for a round or a batch."""
    check_name(name)
    if name == "random":
        return random_policy(terms, rng)
    return _SOLVERS[name](terms)
