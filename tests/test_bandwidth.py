"""(P2), the bandwidth split for fixed media, against an independent high-precision solve.

The reference works in 40-digit arithmetic (mpmath): each agent's bandwidth need ``b_i(T)`` by the
closed form of the inverse rate through the Lambert W function (branch -1), and the common finish
time ``T*`` with ``sum_i b_i(T*) = B`` by a bracketed root finder. The float64 solver must be
within 1e-11 of it (relative), on random rounds and on adversarial ones where an agent's compute
ends just before the common finish time (its need ``b_i(T)`` is then extremely steep in ``T``).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from jmsra_env import bandwidth, model

B = 20e6
ACCURACY = 1e-11  # relative, on the finish time and on the bandwidth (as a share of B)
mp.mp.dps = 40


def need_hz(T, A, D, a):
    """Bandwidth with which an agent finishes at ``T`` (mp): inf when its rate ceiling binds."""
    if D == 0:
        return mp.mpf(0)
    if T <= A:
        return mp.inf
    c = mp.mpf(D) / (T - A) * mp.log(2) / a  # rate as a fraction of the ceiling a / ln 2
    if c >= 1:
        return mp.inf
    z = -mp.lambertw(-c * mp.exp(-c), -1).real / c  # = 1 + a / b
    return a / (z - 1)


def finish_s(b, A, D, a):
    """Finish time of an agent on bandwidth ``b`` (mp)."""
    if D == 0:
        return mp.mpf(A)
    if b <= 0:
        return mp.inf
    return A + D / (b * mp.log(1 + mp.mpf(a) / b) / mp.log(2))


def reference(A, D, a, T_guess):
    """``(latency, b*)`` in mp for one row (``A``, ``D``, ``a`` float arrays; some payload)."""
    A, D, a = ([mp.mpf(float(v)) for v in x] for x in (A, D, a))

    def excess(T):
        return mp.fsum(need_hz(T, *p) for p in zip(A, D, a)) - B

    pole = max(A[i] + D[i] * mp.log(2) / a[i] for i in range(len(A)) if D[i] > 0)
    lo, hi, step = mp.mpf(T_guess), mp.mpf(T_guess), mp.mpf(T_guess) * mp.mpf("1e-13")
    while lo > pole and excess(lo) <= 0:
        lo -= step
        step *= 4
    lo = max(lo, pole + (T_guess - pole) * mp.mpf("1e-30"))
    step = mp.mpf(T_guess) * mp.mpf("1e-13")
    while excess(hi) > 0:
        hi += step
        step *= 4
    for _ in range(400):  # bisection, then the secant in the bracket once it is narrow
        mid = (lo + hi) / 2
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < hi * mp.mpf("1e-30"):
            break
    T = hi
    idle = [A[i] for i in range(len(A)) if D[i] == 0]  # agents without a payload finish at A_i
    return max([T, *idle]), [need_hz(T, *p) for p in zip(A, D, a)]


def check_row(A, D, a):
    """The worst relative error of the solver on one row: ``(finish time, bandwidth / B)``."""
    b, t = bandwidth.solve_rows(A[None], D[None], a[None], B)
    b, t = b[0], float(t[0])
    T_ref, b_ref = reference(A, D, a, t)
    achieved = max(finish_s(mp.mpf(float(bi)), *map(mp.mpf, map(float, p))) for bi, p in zip(b, zip(A, D, a)))
    err_t = abs(achieved - T_ref) / T_ref  # the latency the split really gives
    err_reported = abs(mp.mpf(t) - T_ref) / T_ref  # the value the searches compare
    err_b = max(abs(mp.mpf(float(bi)) - br) for bi, br in zip(b, b_ref)) / B
    assert b.sum() <= B * (1.0 + 4e-16)
    return float(max(err_t, err_reported)), float(err_b)


def random_row(rng, n):
    A = rng.uniform(0.0, 3.0, n)
    D = 10.0 ** rng.uniform(3.0, 9.0, n) * (rng.random(n) > 0.15)
    if not D.any():
        D[0] = 1e6
    a = B * 10.0 ** (rng.uniform(-20.0, 60.0, n) / 10.0)
    return A, D, a


def adversarial_row(rng, n, gap_rel):
    """A random row plus one agent whose compute ends ``gap_rel * T`` before the common finish
    time ``T`` of the others, with the payload that makes it take a share of the band."""
    A, D, a = random_row(rng, n - 1)
    b, t = bandwidth.solve_rows(A[None], D[None], a[None], B)
    T = float(t[0]) * 1.2  # the others now finish later with less band: room for the new agent
    left = B - sum(float(need_hz(mp.mpf(T), mp.mpf(x), mp.mpf(y), mp.mpf(z))) for x, y, z in zip(A, D, a))
    share = left * rng.uniform(0.05, 0.95)
    gap = gap_rel * T
    gain = share * 10.0 ** rng.uniform(-2.0, 3.0)
    payload = float(model.rate_bps(share, gain)) * gap  # finishes at T on that share
    j = int(rng.integers(0, n))
    return np.insert(A, j, T - gap), np.insert(D, j, payload), np.insert(a, j, gain)


@pytest.mark.parametrize("seed", range(12))
def test_p2_matches_the_high_precision_solve_on_random_rounds(seed):
    rng = np.random.default_rng(seed)
    err_t, err_b = check_row(*random_row(rng, int(rng.integers(2, 9))))
    assert err_t <= ACCURACY and err_b <= ACCURACY


@pytest.mark.parametrize("gap_rel", [1e-4, 1e-7, 1e-9, 1e-11, 1e-13])
@pytest.mark.parametrize("seed", range(3))
def test_p2_matches_the_high_precision_solve_when_a_compute_ends_just_before_the_finish(gap_rel, seed):
    rng = np.random.default_rng(100 + seed)
    err_t, err_b = check_row(*adversarial_row(rng, int(rng.integers(2, 7)), gap_rel))
    assert err_t <= ACCURACY and err_b <= ACCURACY
