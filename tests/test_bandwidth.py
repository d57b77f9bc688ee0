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


def test_each_row_is_solved_alone_as_in_a_batch_bit_for_bit():
    """Rows converge after different numbers of iterations (the steep ones last) and leave the
    Newton arrays in groups; a row's result must not depend on the rows around it. JMSRA's two
    paths (a table of every media vector, or one call per greedy step) rely on it."""
    rng = np.random.default_rng(7)
    rows = [random_row(rng, 5) for _ in range(200)]
    rows += [adversarial_row(rng, 5, gap) for gap in (1e-4, 1e-7, 1e-9, 1e-11, 1e-13) for _ in range(4)]
    A, D, a = (np.array(x) for x in zip(*rows))
    b, t = bandwidth.solve_rows(A, D, a, B)
    for k in range(len(rows)):
        b1, t1 = bandwidth.solve_rows(A[k : k + 1], D[k : k + 1], a[k : k + 1], B)
        np.testing.assert_array_equal(b1[0], b[k])
        assert t1[0] == t[k]


@pytest.mark.parametrize("gpu_like", [False, True])
def test_the_torch_solve_agrees_with_numpy_on_every_kind_of_row(gpu_like, monkeypatch):
    """The same solver on float64 torch tensors (what the torch env's ``"solved"`` encoding runs
    on a GPU): every row's split and finish time within 1e-11 of NumPy's, the unsolvable and the
    payload-free rows handled as NumPy does. ``gpu_like``: the code's GPU forms (no host branch,
    a stopping test every few iterations), run on the CPU."""
    torch = pytest.importorskip("torch")
    from jmsra_env.backend import TorchNamespace

    if gpu_like:
        monkeypatch.setattr(TorchNamespace, "host", property(lambda self: False))
    rng = np.random.default_rng(11)
    rows = [random_row(rng, 5) for _ in range(300)]
    rows += [adversarial_row(rng, 5, gap) for gap in (1e-4, 1e-7, 1e-9, 1e-11, 1e-13) for _ in range(4)]
    A, D, a = (np.array(x) for x in zip(*rows))
    D[0] = 0.0  # no payload at all: an equal split, finishing at the last compute
    a[1, 2], D[1, 2] = 0.0, 1e6  # a payload on a dead channel: unsolvable (inf, equal split of payloads)
    D[2, :4] = 0.0  # one agent alone with a payload: the whole band
    want_b, want_t = bandwidth.solve_rows(A, D, a, B)
    got_b, got_t = bandwidth.solve_rows(*(torch.as_tensor(x) for x in (A, D, a)), B)
    got_b, got_t = got_b.numpy(), got_t.numpy()
    assert np.isinf(want_t[1]) and np.isinf(got_t[1]) and got_b[2, 4] == B
    np.testing.assert_allclose(got_b / B, want_b / B, rtol=0, atol=1e-11)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-11)
    # (P2) through the terms: media chosen by a decoder, any batch shape, the terms' dtype back
    from jmsra_env.config import ScenarioConfig
    from jmsra_env.core import Core

    core = Core(ScenarioConfig(), 64)
    core.reset(np.random.default_rng(3))
    terms = core.terms
    media = (rng.random((64, 4)) < 0.5).astype(np.int8)
    tterms = model.RoundTerms(
        *(torch.as_tensor(getattr(terms, f), dtype=torch.float32) for f in model.TERM_ARRAY_FIELDS),
        terms.bandwidth_hz, terms.latency_cap_s,
    )
    split = bandwidth.optimal_split_hz(tterms, torch.as_tensor(media))
    assert split.dtype == torch.float32 and split.shape == (64, 4)
    np.testing.assert_allclose(split.double().numpy() / terms.bandwidth_hz,
                               bandwidth.optimal_split_hz(terms, media) / terms.bandwidth_hz, atol=1e-5)
    if not gpu_like:
        with pytest.raises(ValueError, match="media must hold 0"):
            bandwidth.optimal_split_hz(tterms, torch.full((64, 4), 2))
