"""(P2): the optimal bandwidth split for fixed media (docs/model.md), batched.

For fixed media, agent ``i`` is busy computing until ``A_i = S_i + C_i(x_i)`` and then sends
``D_i`` bits; the round's critical path is ``max_i (A_i + D_i / r_i(b_i))``. To finish by ``T``,
agent ``i`` needs the bandwidth ``b_i(T) = r_i^{-1}(D_i / (T - A_i))`` (0 without a payload, inf
at or left of its *pole* ``A_i + D_i ln 2 / a_i``, where the rate asked for reaches the ceiling
``a_i / ln 2``). ``S(T) = sum_i b_i(T)`` falls as ``T`` grows, so the optimum is the ``T*`` with
``S(T*) = B``: every agent with a payload finishes at ``T*``.

The solver, vectorised over the rows of ``(K, N)`` arrays:

- a safeguarded Newton iteration on ``1 / S(T) - 1 / B`` (nearly linear in ``T``), started at
  ``max_i t_i(B)`` (each agent's time alone on the band) inside the bracket from the rightmost
  pole to ``max_i t_i(B / n)`` (equal split); a step that leaves the bracket is a bisection;
- ``b_i(T)`` by the inverse rate's own Newton iteration in the spectral efficiency
  ``u = ln(1 + a / b)`` (:func:`jmsra_env.model.spectral_efficiency_step`), warm started from
  the previous ``T``, two steps per outer iteration;
- a row stops when ``S`` is within 1e-12 of ``B`` or when ``T`` cannot move at float64
  resolution (an agent whose compute ends just before ``T*`` makes ``S`` so steep that adjacent
  floats of ``T`` straddle ``B``); the residual ``B - S`` then goes to the agents in proportion
  to ``d b_i / dT`` (one linearised Newton step: almost all of it to the agent that can use it),
  so the split sums to ``B`` and every agent finishes at the same ``T`` to first order.

Accuracy: within 1e-11 (relative) of a 40-digit solve, on the finish time and on each bandwidth
as a share of ``B``, also when an agent's compute ends within a few ulps of the finish time
(``tests/test_bandwidth.py``). This module never imports the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import model
from .model import RoundTerms

__all__ = ["solve_rows", "optimal_bandwidth", "FlatTerms", "flat_terms", "solve_media"]

# Newton on T stops when the allocation sums to B within this relative error (the residual is
# then handed out by one linearised step, which leaves an error of second order).
_SUM_RTOL = 1e-12
_MAX_ITER = 200
_COLD_STEPS = 2  # Newton steps on u at the starting T, before the warm-started loop
# Bound on the number of (row x agent) elements one call handles at once (memory).
_CHUNK_ELEMENTS = 1 << 19
# Rows of one Newton loop: (rows x agents) elements, about the best size for the CPU caches.
_BLOCK_ELEMENTS = 1 << 16


# ---------------------------------------------------------------------------------------------
# The kernel: rows of (K, N) arrays


def solve_rows(A, D, a, B: float, cut=None) -> tuple[np.ndarray, np.ndarray]:
    """Solve (P2) for every row of ``(K, N)`` arrays: ``A`` compute before sending (s), ``D``
    payload bits, ``a`` channel gain (Hz); total bandwidth ``B`` (Hz).

    Returns ``(b (K, N), t (K,))`` with ``t = max_i (A_i + D_i / r_i(b_i))`` (uncapped, inf when no
    allocation gives a finite latency). Agents with a payload share the whole band and finish
    together; agents without one get nothing (an all-zero-payload row gets an equal split).
    With ``cut`` (K,), a row whose ``t`` provably exceeds ``cut[k]`` is not solved: it gets
    ``t = inf`` and an equal split among its payload agents (for searches that only need the
    rows that can beat an incumbent). Rows are solved in cache-sized blocks.
    """
    K, N = A.shape
    step = max(256, _BLOCK_ELEMENTS // max(N, 1))
    if K <= step:
        return _solve_block(A, D, a, B, cut)
    b = np.empty((K, N))
    t = np.empty(K)
    for s in range(0, K, step):
        sl = slice(s, s + step)
        b[sl], t[sl] = _solve_block(A[sl], D[sl], a[sl], B, None if cut is None else cut[sl])
    return b, t


def _solve_block(A, D, a, B: float, cut=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`solve_rows` on one block: the bracket, the trivial rows, then Newton on the rest."""
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
    lo = np.max(np.where(pay, t_full, -np.inf), axis=-1)  # S(lo) >= B
    hi = np.max(np.where(pay, t_equal, -np.inf), axis=-1)  # S(hi) <= B (equal split)
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
        b_sol, t_sol = _newton(
            A[idx], delta[idx], a[idx], pay[idx], payf[idx], lo[idx], hi[idx], B,
            None if cut is None else cut[idx],
        )
        b_out[idx] = b_sol
        t_out[idx] = np.maximum(t_sol, a_max[idx])
    return b_out, t_out


def _newton(A, delta, a, pay, payf, lo, hi, B, cut=None):
    """Newton-bisection on the common finish time of the payload agents (rows all solvable)."""
    # Extreme inputs (subnormal payloads, T on a pole) may overflow intermediate values; the
    # bracket test turns any resulting inf / nan step into a bisection step.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if cut is None:
            return _newton_loop(A, delta, a, pay, payf, lo, hi, B)
        # The common finish time exceeds the cut exactly when the band does not suffice at the
        # cut: S(cut) > B (with a margin far above rounding), or the cut is at or left of a pole.
        # One evaluation settles it; only the other rows are solved.
        pole = np.max(np.where(pay, A + delta, -np.inf), axis=-1)
        test = cut > pole
        base = np.where(pay, A + delta, pole[:, None])
        dsafe = np.where(pay, np.maximum(delta, 1e-300), 1.0)
        x = np.maximum((np.where(test, cut, pole + 1.0)[:, None] - base) / dsafe, 1e-30)
        b_cut = model.bandwidth_from_spectral_efficiency_hz(model.spectral_efficiency_nats(np.log1p(x)), a) * payf
        beaten = ~test | (b_cut.sum(axis=-1) > B * (1.0 + 1e-10))
        b_res = payf * (B / payf.sum(axis=-1))[:, None]
        t_res = np.full(A.shape[0], np.inf)
        keep = np.flatnonzero(~beaten)
        if keep.size:
            b_res[keep], t_res[keep] = _newton_loop(
                A[keep], delta[keep], a[keep], pay[keep], payf[keep], lo[keep], hi[keep], B
            )
        return b_res, t_res


def _needs(T, base, dsafe, a, payf, u):
    """Each agent's need ``b_i(T)`` and its growth ``-d b_i / dT`` (both 0 without payload),
    after two warm-started Newton steps on the spectral efficiencies ``u``; also returns the new
    ``u`` and whether those steps have converged (per row)."""
    # x >= 1e-30 keeps b finite when T rounds onto an agent's pole (a payload that needs no time
    # at float64 resolution); a genuine x that small would need b > 1e29 a.
    x = np.maximum((T[:, None] - base) / dsafe, 1e-30)
    L = np.log1p(x)
    # Two steps: one alone lets the outer Newton chase the inner error (linear convergence).
    u = model.spectral_efficiency_step(u, L)[0]
    u, du = model.spectral_efficiency_step(u, L)
    # After a step of |du| <= 1e-7 u the error of u is below ~1e-15 u (F'' / 2F' <= 1/12).
    inner = (np.abs(du) <= 1e-7 * u).all(axis=-1)
    b = model.bandwidth_from_spectral_efficiency_hz(u, a) * payf
    # -d b_i / dT = b_i g(u_i) / (T - A_i), g the inverse-rate elasticity.
    grow = b * model.inverse_rate_elasticity(u) / (dsafe * (1.0 + x))
    return b, grow, u, inner


def _to_band(T, b, grow, B):
    """Hand the residual ``B - S`` out in proportion to ``-d b_i / dT`` (a linearised Newton
    step: every agent's finish time moves by the same ``dT``); returns ``(b, T + dT)``.

    Rows where that step is not usable (non-finite, or it would make a bandwidth negative) are
    rescaled to the band instead."""
    S = b.sum(axis=-1)
    G = grow.sum(axis=-1)
    res = B - S
    b_new = b + grow * (res / G)[:, None]
    t_new = T - res / G
    bad = ~(np.isfinite(b_new).all(axis=-1) & (b_new >= 0.0).all(axis=-1) & np.isfinite(t_new))
    if bad.any():
        b_new[bad] = b[bad] * (B / np.where(S[bad] > 0.0, S[bad], B))[:, None]
        t_new[bad] = T[bad]
    return b_new, t_new


def _newton_loop(A, delta, a, pay, payf, lo, hi, B):
    """The Newton iteration on ``T`` for rows that all have a solution; returns ``(b, T)``."""
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
    # Each row's T, needs and their growth when it stops; handed to the band once at the end.
    b_res = np.empty_like(A)
    g_res = np.empty_like(A)
    t_res = np.empty(k)
    rows = np.arange(k)
    # The spectral efficiencies u_i(T) are carried from one T to the next (warm start).
    L = np.log1p(np.maximum((T[:, None] - base) / dsafe, 1e-30))
    u = L + np.log1p(L)
    for _ in range(_COLD_STEPS):
        u = model.spectral_efficiency_step(u, L)[0]
    for _ in range(_MAX_ITER):
        b, grow, u, inner = _needs(T, base, dsafe, a, payf, u)
        S = b.sum(axis=-1)
        above = S > B
        lo = np.where(above, T, lo)
        hi = np.where(above, hi, T)
        # Newton on G(T) = 1/S - 1/B:  T - G / G' = T - S (B - S) / (B (-S'))
        Tn = T - S * (B - S) / (B * grow.sum(axis=-1))
        Tn = np.where((Tn >= lo) & (Tn <= hi), Tn, 0.5 * (lo + hi))
        ok = inner & (np.abs(S - B) <= _SUM_RTOL * B)
        done = ok
        open_ = inner & ~ok
        if open_.any():
            # Stuck when T cannot move at float64 resolution (a very steep S(T)).
            done = ok | (open_ & ((np.abs(Tn - T) <= 8e-16 * np.abs(T)) | (hi - lo <= 8e-16 * np.abs(hi))))
        if done.all():
            b_res[rows], g_res[rows], t_res[rows] = b, grow, T
            return _to_band(t_res, b_res, g_res, B)
        if done.any():
            r = rows[done]
            b_res[r], g_res[r], t_res[r] = b[done], grow[done], T[done]
            keep = ~done
            rows, Tn, lo, hi = rows[keep], Tn[keep], lo[keep], hi[keep]
            base, dsafe, a, payf, u = base[keep], dsafe[keep], a[keep], payf[keep], u[keep]
        T = Tn
    # Not reached in practice (bisection alone collapses the bracket in ~60 steps).
    b_res[rows], g_res[rows], _, _ = _needs(T, base, dsafe, a, payf, u)
    t_res[rows] = T
    return _to_band(t_res, b_res, g_res, B)


# ---------------------------------------------------------------------------------------------
# Rounds of RoundTerms: flat views and (P2) for (round, media) rows


@dataclass(frozen=True)
class FlatTerms:
    """A batch of rounds flattened to ``M`` rows, with per-medium compute-before-sending."""

    A: np.ndarray  # (M, N, 2) S_i + C_i(x), per medium
    D: np.ndarray  # (M, N, 2) payload bits, per medium
    R: np.ndarray  # (M, N, 2) receiver work, per medium
    answer: np.ndarray  # (M,) G tau_dec,r
    a: np.ndarray  # (M, N) channel gain (Hz)
    B: float
    batch_shape: tuple[int, ...]
    n: int


def flat_terms(terms: RoundTerms) -> FlatTerms:
    """:class:`FlatTerms` of a batch of rounds of any batch shape."""
    n = terms.n_agents
    shape = terms.batch_shape
    S = np.asarray(terms.prefill_s, dtype=np.float64).reshape(-1, n)
    m = S.shape[0]
    C = np.asarray(terms.extra_compute_s, dtype=np.float64).reshape(m, n, 2)
    return FlatTerms(
        A=S[..., None] + C,
        D=np.asarray(terms.payload_bits, dtype=np.float64).reshape(m, n, 2),
        R=np.asarray(terms.receiver_s, dtype=np.float64).reshape(m, n, 2),
        answer=np.broadcast_to(np.asarray(terms.answer_s, dtype=np.float64), shape).reshape(m),
        a=np.asarray(terms.gain_hz, dtype=np.float64).reshape(m, n),
        B=float(terms.bandwidth_hz),
        batch_shape=shape,
        n=n,
    )


def solve_media(f: FlatTerms, rounds: np.ndarray, media: np.ndarray, below=None):
    """(P2) for rows ``(rounds[k], media[k])``; returns ``(b (K, N), total latency T (K,))``.

    ``T`` is uncapped and includes the receiver's work and the answer. With ``below`` (K,), rows
    whose latency provably is not below ``below[k]`` come back as inf. Rows are gathered and
    solved in pieces of bounded memory."""
    step = max(1, _CHUNK_ELEMENTS // f.n)
    if rounds.size <= step:
        return _solve_gathered(f, rounds, media, below)
    b = np.empty((rounds.size, f.n))
    t = np.empty(rounds.size)
    for s in range(0, rounds.size, step):
        sl = slice(s, s + step)
        b[sl], t[sl] = _solve_gathered(f, rounds[sl], media[sl], None if below is None else below[sl])
    return b, t


def _solve_gathered(f: FlatTerms, rounds: np.ndarray, media: np.ndarray, below=None):
    A = model.select_medium(f.A[rounds], media)
    D = model.select_medium(f.D[rounds], media)
    R = model.select_medium(f.R[rounds], media).sum(axis=-1)
    rest = R + f.answer[rounds]
    b, t = solve_rows(A, D, f.a[rounds], f.B, None if below is None else below - rest)
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
    f = flat_terms(terms)
    m = f.A.shape[0]
    b, _ = solve_media(f, np.arange(m), x.reshape(m, f.n))
    b = b.reshape(x.shape)
    return b, model.latency(terms, x, b).latency_s
