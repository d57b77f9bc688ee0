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

(P2), bandwidth for fixed media, is solved by a safeguarded Newton iteration on the common finish
time ``T`` of the agents with a payload (on ``1 / sum_i b_i(T) - 1 / B``, nearly linear in ``T``),
started at ``max_i t_i(B)`` (each agent's time alone on the band) inside the bracket from the
rightmost rate-ceiling pole to ``max_i t_i(B / n)`` (equal split); ``b_i(T)`` is the inverse rate
through :func:`jmsra_env.model.spectral_efficiency_step` (Newton in the spectral efficiency, warm
started from the previous ``T``). This module never imports the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import model
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
# Newton on T stops when the allocation sums to B within this relative error (rescaling b to the
# band then moves the finish times by about as much: far inside the 1e-9 promised).
_SUM_RTOL = 1e-12
_MAX_ITER = 200
_COLD_STEPS = 2  # Newton steps on u at the starting T, before the warm-started loop
# Bound on the number of (row x agent) elements one (P2) call handles at once (memory).
_CHUNK_ELEMENTS = 1 << 19
# Rows of one (P2) Newton loop: (rows x agents) elements, about the best size for the CPU caches.
_BLOCK_ELEMENTS = 1 << 16


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
# (P2): optimal bandwidth for fixed media, over rows of a flat batch


def _p2_rows(A, D, a, B: float, cut=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_p2_block` over blocks of rows that keep the working arrays cache-sized."""
    K, N = A.shape
    step = max(256, _BLOCK_ELEMENTS // max(N, 1))
    if K <= step:
        return _p2_block(A, D, a, B, cut)
    b = np.empty((K, N))
    t = np.empty(K)
    for s in range(0, K, step):
        sl = slice(s, s + step)
        b[sl], t[sl] = _p2_block(A[sl], D[sl], a[sl], B, None if cut is None else cut[sl])
    return b, t


def _p2_block(A, D, a, B: float, cut=None) -> tuple[np.ndarray, np.ndarray]:
    """Solve (P2) for every row of ``(K, N)`` arrays: ``A`` compute before sending, ``D`` payload
    bits, ``a`` channel gain (Hz); total bandwidth ``B``.

    Returns ``(b (K, N), t (K,))`` with ``t = max_i (A_i + D_i / r_i(b_i))`` (uncapped, inf when no
    allocation gives a finite latency). Agents with a payload share the whole band and finish
    together; agents without one get nothing (an all-zero-payload row gets an equal split).
    With ``cut`` (K,), a row whose ``t`` provably exceeds ``cut[k]`` is not solved: it gets
    ``t = inf`` and an equal split among its payload agents (for searches that only need the
    rows that can beat an incumbent).
    """
    K, N = A.shape
    pay = D > 0.0
    payf = pay.astype(np.float64)
    npay = pay.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Time to send at the rate ceiling a / ln 2: T must exceed A_i + delta_i.
        delta = model.transmission_time_s(D, model.rate_ceiling_bps(a))
        t_full = A + model.transmission_time_s(D, model.rate_bps(B, a))
        share = B / np.maximum(npay, 1)
        t_equal = A + model.transmission_time_s(D, model.rate_bps(share[:, None], a))
    lo = np.max(np.where(pay, t_full, -np.inf), axis=-1)  # sum_i b_i(lo) >= B
    hi = np.max(np.where(pay, t_equal, -np.inf), axis=-1)  # sum_i b_i(hi) <= B (equal split)
    a_max = A.max(axis=-1)

    b_out = np.where(pay, share[:, None], 0.0)  # infeasible rows: equal split among payloads
    b_out[npay == 0] = B / N
    t_out = np.where(npay == 0, a_max, np.inf)

    ok = (npay > 0) & np.isfinite(hi) & np.isfinite(lo) & (np.isfinite(delta) | ~pay).all(axis=-1)
    if cut is not None:
        ok &= a_max < cut  # an agent's compute alone already exceeds the cut
        t_out = np.where((npay == 0) & (a_max >= cut), np.inf, t_out)
    idx = np.flatnonzero(ok)
    if idx.size:
        b_sol, t_sol = _p2_newton(
            A[idx], delta[idx], a[idx], pay[idx], payf[idx], lo[idx], hi[idx], B,
            None if cut is None else cut[idx],
        )
        b_out[idx] = b_sol
        t_out[idx] = np.maximum(t_sol, a_max[idx])
    return b_out, t_out


def _alloc(T, base, dsafe, a, payf):
    """b_i(T) for every agent (0 without payload) and the pieces Newton needs."""
    # x >= 1e-30 keeps b finite when T rounds onto an agent's pole (a payload that needs no time
    # at float64 resolution); a genuine x that small would need b > 1e29 a.
    x = np.maximum((T[:, None] - base) / dsafe, 1e-30)
    u = model.spectral_efficiency_nats(np.log1p(x))
    return model.bandwidth_from_spectral_efficiency_hz(u, a) * payf, u, x


def _scaled_to_band(b, B):
    S = b.sum(axis=-1)
    return b * (B / np.where(S > 0.0, S, B))[:, None]


def _p2_newton(A, delta, a, pay, payf, lo, hi, B, cut=None):
    """Newton-bisection on the common finish time of the payload agents (rows all solvable)."""
    # Extreme inputs (subnormal payloads, T on a pole) may overflow intermediate values; the
    # bracket test below turns any resulting inf / nan step into a bisection step.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if cut is None:
            return _p2_newton_loop(A, delta, a, pay, payf, lo, hi, B)
        # The common finish time exceeds the cut exactly when the band does not suffice at the
        # cut: sum_i b_i(cut) > B (with a margin far above rounding), or the cut is at or left of
        # a rate-ceiling pole. One evaluation settles it; only the other rows are solved.
        pole = np.max(np.where(pay, A + delta, -np.inf), axis=-1)
        test = cut > pole
        b_cut = _alloc(np.where(test, cut, pole + 1.0), np.where(pay, A + delta, pole[:, None]),
                       np.where(pay, np.maximum(delta, 1e-300), 1.0), a, payf)[0]
        beaten = ~test | (b_cut.sum(axis=-1) > B * (1.0 + 1e-10))
        b_res = payf * (B / payf.sum(axis=-1))[:, None]
        t_res = np.full(A.shape[0], np.inf)
        keep = np.flatnonzero(~beaten)
        if keep.size:
            b_res[keep], t_res[keep] = _p2_newton_loop(
                A[keep], delta[keep], a[keep], pay[keep], payf[keep], lo[keep], hi[keep], B
            )
        return b_res, t_res


def _p2_newton_loop(A, delta, a, pay, payf, lo, hi, B):
    k = A.shape[0]
    # For payload agents T - A_i = delta_i (1 + x_i) with x_i = (T - A_i - delta_i) / delta_i > 0
    # inside the bracket. Agents without payload get placeholders that keep every value finite.
    base = np.where(pay, A + delta, (lo - 1.0)[:, None])
    dsafe = np.where(pay, np.maximum(delta, 1e-300), 1.0)  # delta underflows for subnormal payloads
    # Start at max_i t_i(B), but bracket from the rightmost pole (S = inf there): t_i(B) comes from
    # model.rate_bps, whose rounding need not match this inverse's to the last bit.
    T = lo
    lo = np.max(np.where(pay, base, -np.inf), axis=-1)
    hi = np.nextafter(hi * (1.0 + 1e-12), np.inf)  # S(hi) <= B must survive the rounding of hi
    b_res = np.empty_like(A)
    t_res = np.empty(k)
    rows = np.arange(k)
    # The spectral efficiencies u_i(T) are carried from one T to the next (warm start): two Newton
    # steps per iteration suffice once T settles; a row is only accepted once the last step is tiny.
    L = np.log1p(np.maximum((T[:, None] - base) / dsafe, 1e-30))
    u = L + np.log1p(L)
    for _ in range(_COLD_STEPS):
        u = model.spectral_efficiency_step(u, L)[0]
    for _ in range(_MAX_ITER):
        # x >= 1e-30 keeps b finite when T rounds onto an agent's pole (a payload that needs no
        # time at float64 resolution); a genuine x that small would need b > 1e29 a.
        x = np.maximum((T[:, None] - base) / dsafe, 1e-30)
        L = np.log1p(x)
        # Two steps: one alone lets the outer Newton chase the inner error (linear convergence).
        u = model.spectral_efficiency_step(u, L)[0]
        u, du = model.spectral_efficiency_step(u, L)
        # After a step of |du| <= 1e-7 u the error of u is below ~1e-15 u (F'' / 2F' <= 1/12).
        inner = (np.abs(du) <= 1e-7 * u).all(axis=-1)
        b = model.bandwidth_from_spectral_efficiency_hz(u, a) * payf
        S = b.sum(axis=-1)
        # dS/dT = -sum_i b_i g(u_i) / (T - A_i), g the inverse-rate elasticity.
        dS = -(b * model.inverse_rate_elasticity(u) / (dsafe * (1.0 + x))).sum(axis=-1)
        above = S > B
        lo = np.where(above, T, lo)
        hi = np.where(above, hi, T)
        # Newton on G(T) = 1/S - 1/B:  T - G / G' = T + S (B - S) / (B S')
        Tn = T + S * (B - S) / (B * dS)
        Tn = np.where((Tn >= lo) & (Tn <= hi), Tn, 0.5 * (lo + hi))
        # Converged when the band is used to _SUM_RTOL: rescaling b by B / S then moves every
        # finish time by about that much.
        ok = inner & (np.abs(S - B) <= _SUM_RTOL * B)
        if ok.all():
            b_res[rows] = b * (B / S)[:, None]
            t_res[rows] = T
            return b_res, t_res
        # Stuck when T cannot move at float64 resolution (a very steep sum_i b_i(T)).
        stuck = ~ok & inner & ((np.abs(Tn - T) <= 8e-16 * np.abs(T)) | (hi - lo <= 8e-16 * np.abs(hi)))
        if ok.any():
            r = rows[ok]
            b_res[r] = b[ok] * (B / S[ok])[:, None]
            t_res[r] = T[ok]
        if stuck.any():
            # Take the feasible side: T itself when it needs at most B (1 + 1e-9), else one ulp up.
            near = S <= B * (1.0 + 1e-9)
            fine = stuck & near
            r = rows[fine]
            b_res[r] = b[fine] * (B / S[fine])[:, None]
            t_res[r] = T[fine]
            up = stuck & ~near
            if up.any():
                Ts = np.nextafter(T[up], np.inf)
                r = rows[up]
                b_res[r] = _scaled_to_band(_alloc(Ts, base[up], dsafe[up], a[up], payf[up])[0], B)
                t_res[r] = Ts
        done = ok | stuck
        if done.any():
            keep = ~done
            if not keep.any():
                return b_res, t_res
            rows, T, lo, hi = rows[keep], Tn[keep], lo[keep], hi[keep]
            base, dsafe, a, payf, u = base[keep], dsafe[keep], a[keep], payf[keep], u[keep]
        else:
            T = Tn
    # Not reached in practice (bisection alone collapses the bracket in ~60 steps).
    b_res[rows] = _scaled_to_band(_alloc(T, base, dsafe, a, payf)[0], B)
    t_res[rows] = T
    return b_res, t_res


# ---------------------------------------------------------------------------------------------
# Flat views of a batch of rounds


@dataclass(frozen=True)
class _Flat:
    A: np.ndarray  # (M, N, 2) S_i + C_i(x)
    D: np.ndarray  # (M, N, 2) payload bits
    R: np.ndarray  # (M, N, 2) receiver work
    answer: np.ndarray  # (M,)
    a: np.ndarray  # (M, N)
    B: float
    batch_shape: tuple[int, ...]
    n: int


def _flat(terms: RoundTerms) -> _Flat:
    n = terms.n_agents
    shape = terms.batch_shape
    S = np.asarray(terms.prefill_s, dtype=np.float64).reshape(-1, n)
    m = S.shape[0]
    C = np.asarray(terms.extra_compute_s, dtype=np.float64).reshape(m, n, 2)
    return _Flat(
        A=S[..., None] + C,
        D=np.asarray(terms.payload_bits, dtype=np.float64).reshape(m, n, 2),
        R=np.asarray(terms.receiver_s, dtype=np.float64).reshape(m, n, 2),
        answer=np.broadcast_to(np.asarray(terms.answer_s, dtype=np.float64), shape).reshape(m),
        a=np.asarray(terms.gain_hz, dtype=np.float64).reshape(m, n),
        B=float(terms.bandwidth_hz),
        batch_shape=shape,
        n=n,
    )


def _p2_for(f: _Flat, rounds: np.ndarray, media: np.ndarray, below=None):
    """(P2) for rows ``(rounds[k], media[k])``; returns ``(b (K, N), total latency T (K,))``.

    With ``below`` (K,), rows whose latency provably is not below ``below[k]`` come back as inf.
    Rows are gathered and solved in pieces of bounded memory."""
    step = max(1, _CHUNK_ELEMENTS // f.n)
    if rounds.size <= step:
        return _p2_gathered(f, rounds, media, below)
    b = np.empty((rounds.size, f.n))
    t = np.empty(rounds.size)
    for s in range(0, rounds.size, step):
        sl = slice(s, s + step)
        b[sl], t[sl] = _p2_gathered(f, rounds[sl], media[sl], None if below is None else below[sl])
    return b, t


def _p2_gathered(f: _Flat, rounds: np.ndarray, media: np.ndarray, below=None):
    A = model.select_medium(f.A[rounds], media)
    D = model.select_medium(f.D[rounds], media)
    R = model.select_medium(f.R[rounds], media).sum(axis=-1)
    rest = R + f.answer[rounds]
    b, t = _p2_rows(A, D, f.a[rounds], f.B, None if below is None else below - rest)
    return b, t + rest


def _check_media(terms: RoundTerms, media) -> np.ndarray:
    x = np.asarray(media)
    want = (*terms.batch_shape, terms.n_agents)
    try:
        x = np.broadcast_to(x, want)
    except ValueError:
        raise ValueError(f"media must broadcast to shape {want}; got shape {x.shape}") from None
    if not np.all((x == 0) | (x == 1)):
        raise ValueError("media must hold 0 (NL) or 1 (KV)")
    return x.astype(np.int8)


def optimal_bandwidth(terms: RoundTerms, media) -> tuple[np.ndarray, np.ndarray]:
    """(P2): the bandwidth split minimising the latency for fixed ``media`` (batch-aware).

    Returns ``(bandwidth_hz (..., N), latency_s (...))``; the split sums to ``B`` (to rounding),
    agents with a payload finish together, agents without one get 0 (all-zero payloads: equal
    split). ``latency_s`` is :func:`jmsra_env.model.latency` of the decision (capped).
    """
    x = _check_media(terms, media)
    f = _flat(terms)
    m = f.A.shape[0]
    b, _ = _p2_for(f, np.arange(m), x.reshape(m, f.n))
    b = b.reshape(x.shape)
    return b, model.latency(terms, x, b).latency_s


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

    Ties (within 1e-12 relative) go to the lowest agent index and to the all-NL start. Each greedy
    iteration solves every candidate of every round and direction in one batched (P2) call
    (skipping the switches that a lower bound rules out).
    """
    f = _flat(terms)
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
    b_all, v_all = _p2_for(f, np.repeat(pair_round, N + 1), cand_media.reshape(-1, N))
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
        b_r, v_r = _p2_for(f, rr, rows_media, below=val[p[pi]] * (1.0 - _TIE_RTOL))
        cand_val = np.full((p.size, N), np.inf)
        cand_val[pi, ji] = v_r
        cand_b = b_r
        cand_pos = np.full((p.size, N), -1)
        cand_pos[pi, ji] = np.arange(pi.size)
        active = p

    val2 = val.reshape(M, 2)
    pick = (val2[:, 1] < val2[:, 0] * (1.0 - _TIE_RTOL)).astype(np.int64)
    chosen = 2 * np.arange(M) + pick
    media = x[chosen].reshape(*f.batch_shape, N)
    b = bw[chosen].reshape(*f.batch_shape, N)
    return _decision(terms, media, b)


# ---------------------------------------------------------------------------------------------
# Exhaustive optimum


def _media_of(codes: np.ndarray, n: int) -> np.ndarray:
    """Media vectors of candidate codes: agent i is KV when bit i of the code is set."""
    return ((codes[:, None] >> np.arange(n)) & 1).astype(np.int8)


def _finish_alone_s(f: _Flat) -> np.ndarray:
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
    f = _flat(terms)
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
            b, v = _p2_codes(f, rounds[ri], codes, n, below)
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


def _p2_codes(f: _Flat, rounds: np.ndarray, codes: np.ndarray, n: int, below=None):
    """(P2) for rows ``(rounds[k], media of codes[k])``, in pieces of bounded memory."""
    step = max(1, _CHUNK_ELEMENTS // n)
    if rounds.size <= step:
        return _p2_for(f, rounds, _media_of(codes, n), below)
    b = np.empty((rounds.size, n))
    v = np.empty(rounds.size)
    for s in range(0, rounds.size, step):
        sl = slice(s, s + step)
        b[sl], v[sl] = _p2_for(f, rounds[sl], _media_of(codes[sl], n), None if below is None else below[sl])
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
