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
from .backend import namespace
from .model import RoundTerms

__all__ = ["solve_rows", "optimal_bandwidth", "optimal_split_hz", "FlatTerms", "flat_terms", "solve_media"]

# Newton on T stops when the allocation sums to B within this relative error (the residual is
# then handed out by one linearised step, which leaves an error of second order).
_SUM_RTOL = 1e-12
_MAX_ITER = 200
# Finished rows leave the Newton arrays once they are this fraction of them (until then they are
# iterated along and ignored: a copy of every array per finishing iteration costs more).
_COMPACT_FRACTION = 0.5
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

    NumPy arrays or float64 torch tensors of one device (the same iteration; on torch every row
    is iterated until all have stopped, with no host sync but the loop's stopping test, and
    ``cut`` is not taken).
    """
    K, N = A.shape
    if namespace(A, D, a).is_torch:
        if cut is not None:
            raise ValueError("solve_rows: cut is taken on NumPy arrays only")
        return _solve_block(A, D, a, B)
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
    xp = namespace(A, D, a)
    K, N = A.shape
    pay = D > 0.0
    payf = xp.astype(pay, xp.float64)
    npay = pay.sum(-1)
    with xp.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Time to send at the rate ceiling a / ln 2: T must exceed A_i + delta_i.
        delta = model.transmission_time_s(D, model.rate_ceiling_bps(a))
        t_full = A + model.transmission_time_s(D, model.rate_bps(B, a))
        share = B / xp.as_float(xp.maximum(npay, 1))
        t_equal = A + model.transmission_time_s(D, model.rate_bps(share[:, None], a))
    lo = xp.amax(xp.where(pay, t_full, -np.inf), axis=-1)  # S(lo) >= B
    hi = xp.amax(xp.where(pay, t_equal, -np.inf), axis=-1)  # S(hi) <= B (equal split)
    a_max = xp.amax(A, axis=-1)

    # infeasible rows: equal split among payloads; no payload at all: equal split of the band
    b_out = xp.where(pay, share[:, None], 0.0)
    b_out = xp.where((npay == 0)[:, None], B / N, b_out)
    t_out = xp.where(npay == 0, a_max, np.inf)

    ok = (npay > 0) & xp.isfinite(hi) & xp.isfinite(lo) & (xp.isfinite(delta) | ~pay).all(-1)
    if xp.is_torch:  # every row through the iteration, the unsolvable ones ignored
        with xp.errstate(divide="ignore", invalid="ignore", over="ignore"):
            b_sol, t_sol = _newton_loop(A, delta, a, pay, payf, lo, hi, B, live=ok)
        return xp.where(ok[:, None], b_sol, b_out), xp.where(ok, xp.maximum(t_sol, a_max), t_out)
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
    xp = namespace(T)
    # x >= 1e-30 keeps b finite when T rounds onto an agent's pole (a payload that needs no time
    # at float64 resolution); a genuine x that small would need b > 1e29 a.
    x = xp.maximum((T[:, None] - base) / dsafe, 1e-30)
    L = xp.log1p(x)
    # Two steps: one alone lets the outer Newton chase the inner error (linear convergence).
    u = model.spectral_efficiency_step(u, L)[0]
    u, du = model.spectral_efficiency_step(u, L)
    # After a step of |du| <= 1e-7 u the error of u is below ~1e-15 u (F'' / 2F' <= 1/12).
    inner = (xp.abs(du) <= 1e-7 * u).all(-1)
    b = model.bandwidth_from_spectral_efficiency_hz(u, a) * payf
    # -d b_i / dT = b_i g(u_i) / (T - A_i), g the inverse-rate elasticity.
    grow = b * model.inverse_rate_elasticity(u) / (dsafe * (1.0 + x))
    return b, grow, u, inner


def _iterate(T, lo, hi, base, dsafe, a, payf, u, B):
    """One Newton-bisection step on ``T``: the needs at ``T`` (:func:`_needs`), the bracket, the
    next ``T`` and which rows stop at ``T``."""
    xp = namespace(T)
    b, grow, u, inner = _needs(T, base, dsafe, a, payf, u)
    S = b.sum(-1)
    above = S > B
    lo = xp.where(above, T, lo)
    hi = xp.where(above, hi, T)
    # Newton on G(T) = 1/S - 1/B:  T - G / G' = T - S (B - S) / (B (-S'))
    Tn = T - S * (B - S) / (B * grow.sum(-1))
    Tn = xp.where((Tn >= lo) & (Tn <= hi), Tn, 0.5 * (lo + hi))
    ok = inner & (xp.abs(S - B) <= _SUM_RTOL * B)
    done = ok
    open_ = inner & ~ok
    if not xp.host or open_.any():
        # Stuck when T cannot move at float64 resolution (a very steep S(T)).
        done = ok | (open_ & ((xp.abs(Tn - T) <= 8e-16 * xp.abs(T)) | (hi - lo <= 8e-16 * xp.abs(hi))))
    return b, grow, u, lo, hi, Tn, done


def _to_band(T, b, grow, B):
    """Hand the residual ``B - S`` out in proportion to ``-d b_i / dT`` (a linearised Newton
    step: every agent's finish time moves by the same ``dT``); returns ``(b, T + dT)``.

    Rows where that step is not usable (non-finite, or it would make a bandwidth negative) are
    rescaled to the band instead."""
    xp = namespace(b)
    S = b.sum(-1)
    G = grow.sum(-1)
    res = B - S
    b_new = b + grow * (res / G)[:, None]
    t_new = T - res / G
    bad = ~(xp.isfinite(b_new).all(-1) & (b_new >= 0.0).all(-1) & xp.isfinite(t_new))
    if xp.is_torch:
        b_new = xp.where(bad[:, None], b * (B / xp.where(S > 0.0, S, B))[:, None], b_new)
        return b_new, xp.where(bad, T, t_new)
    if bad.any():
        b_new[bad] = b[bad] * (B / np.where(S[bad] > 0.0, S[bad], B))[:, None]
        t_new[bad] = T[bad]
    return b_new, t_new


def _newton_loop(A, delta, a, pay, payf, lo, hi, B, live=None):
    """The Newton iteration on ``T`` for rows that all have a solution; returns ``(b, T)``.

    NumPy: finished rows leave the arrays as they accumulate. torch: every row is iterated
    until all have stopped (``live``: the rows to solve; the others are ignored)."""
    xp = namespace(A)
    k = A.shape[0]
    # For payload agents T - A_i = delta_i (1 + x_i) with x_i = (T - A_i - delta_i) / delta_i > 0
    # inside the bracket. Agents without payload get placeholders that keep every value finite.
    base = xp.where(pay, A + delta, (lo - 1.0)[:, None])
    dsafe = xp.where(pay, xp.maximum(delta, 1e-300), 1.0)  # delta underflows for subnormal payloads
    # Start at max_i t_i(B), but bracket from the rightmost pole (S = inf there): t_i(B) comes from
    # model.rate_bps, whose rounding need not match this inverse's to the last bit.
    T = lo
    lo = xp.amax(xp.where(pay, base, -np.inf), axis=-1)
    hi = xp.nextafter(hi * (1.0 + 1e-12), np.inf)  # S(hi) <= B must survive the rounding of hi
    # The spectral efficiencies u_i(T) are carried from one T to the next (warm start).
    L = xp.log1p(xp.maximum((T[:, None] - base) / dsafe, 1e-30))
    u = L + xp.log1p(L)
    for _ in range(_COLD_STEPS):
        u = model.spectral_efficiency_step(u, L)[0]
    if xp.is_torch:
        return _newton_masked(T, lo, hi, base, dsafe, a, payf, u, B, live)
    # Each row's T, needs and their growth when it stops; handed to the band once at the end.
    b_res = np.empty_like(A)
    g_res = np.empty_like(A)
    t_res = np.empty(k)
    rows = np.arange(k)
    fin = np.zeros(k, dtype=bool)  # rows whose result is recorded (still iterated until compacted)
    for _ in range(_MAX_ITER):
        b, grow, u, lo, hi, Tn, done = _iterate(T, lo, hi, base, dsafe, a, payf, u, B)
        new = done & ~fin
        if (done | fin).all():
            r = rows[new]
            b_res[r], g_res[r], t_res[r] = b[new], grow[new], T[new]
            return _to_band(t_res, b_res, g_res, B)
        if new.any():
            r = rows[new]
            b_res[r], g_res[r], t_res[r] = b[new], grow[new], T[new]
            fin |= new
            if fin.sum() >= _COMPACT_FRACTION * fin.size:
                keep = ~fin
                rows, Tn, lo, hi, fin = rows[keep], Tn[keep], lo[keep], hi[keep], fin[keep]
                base, dsafe, a, payf, u = base[keep], dsafe[keep], a[keep], payf[keep], u[keep]
        T = Tn
    # Not reached in practice (bisection alone collapses the bracket in ~60 steps).
    b_last, g_last, _, _ = _needs(T, base, dsafe, a, payf, u)
    r = rows[~fin]
    b_res[r], g_res[r], t_res[r] = b_last[~fin], g_last[~fin], T[~fin]
    return _to_band(t_res, b_res, g_res, B)


_SYNC_EVERY = 4  # torch off the CPU: iterations between the loop's stopping tests (host syncs)


def _newton_masked(T, lo, hi, base, dsafe, a, payf, u, B, live):
    """:func:`_newton_loop`'s iteration on torch: every row iterated, each one's result recorded
    at the iteration where it stops (as on NumPy), until all have stopped."""
    xp = namespace(T)
    fin = ~live  # the rows not to solve count as stopped
    b_res = xp.zeros_like(base)
    g_res = xp.zeros_like(base)
    t_res = xp.zeros_like(T)
    every = 1 if xp.host else _SYNC_EVERY
    for it in range(_MAX_ITER):
        b, grow, u, lo, hi, Tn, done = _iterate(T, lo, hi, base, dsafe, a, payf, u, B)
        new = done & ~fin
        b_res = xp.where(new[:, None], b, b_res)
        g_res = xp.where(new[:, None], grow, g_res)
        t_res = xp.where(new, T, t_res)
        fin = fin | new
        if it % every == every - 1 and bool(fin.all()):
            return _to_band(t_res, b_res, g_res, B)
        T = Tn
    # Not reached in practice (bisection alone collapses the bracket in ~60 steps).
    b_last, g_last, _, _ = _needs(T, base, dsafe, a, payf, u)
    b_res = xp.where(fin[:, None], b_res, b_last)
    g_res = xp.where(fin[:, None], g_res, g_last)
    return _to_band(xp.where(fin, t_res, T), b_res, g_res, B)


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


def optimal_split_hz(terms: RoundTerms, media):
    """(P2)'s bandwidth split alone (:func:`optimal_bandwidth` without the latency), for NumPy
    arrays or torch tensors.

    On torch (any device, any floating dtype) the solve runs in float64 on the terms' device and
    the split comes back in the terms' dtype; ``media`` must hold 0 / 1 (checked on the CPU; on a
    GPU it is not, since a check would synchronise the device with the host).
    """
    xp = namespace(terms.prefill_s, media)
    if not xp.is_torch:
        return _split_of_checked(terms, _check_media(terms, media))
    torch = xp.torch
    n, shape = terms.n_agents, terms.batch_shape
    if xp.host and not bool(((media == 0) | (media == 1)).all()):  # a check costs a sync off the CPU
        raise ValueError("media must hold 0 (NL) or 1 (KV)")
    flat = [
        xp.astype(v, torch.float64).reshape(-1, n)
        for v in (
            terms.prefill_s + model.select_medium(terms.extra_compute_s, media),
            model.select_medium(terms.payload_bits, media),
            xp.broadcast_to(terms.gain_hz, (*shape, n)),
        )
    ]
    b, _ = solve_rows(*flat, float(terms.bandwidth_hz))
    return b.reshape(*shape, n).to(terms.prefill_s.dtype)


def optimal_bandwidth(terms: RoundTerms, media) -> tuple[np.ndarray, np.ndarray]:
    """(P2): the bandwidth split minimising the latency for fixed ``media`` (batch-aware).

    Returns ``(bandwidth_hz (..., N), latency_s (...))``; the split sums to ``B`` (to rounding),
    agents with a payload finish together, agents without one get 0 (all-zero payloads: equal
    split). ``latency_s`` is :func:`jmsra_env.model.latency` of the decision (capped).
    """
    x = _check_media(terms, media)
    b = _split_of_checked(terms, x)
    return b, model.latency(terms, x, b).latency_s


def _split_of_checked(terms: RoundTerms, x: np.ndarray) -> np.ndarray:
    f = flat_terms(terms)
    m = f.A.shape[0]
    b, _ = solve_media(f, np.arange(m), x.reshape(m, f.n))
    return b.reshape(x.shape)
