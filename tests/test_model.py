"""Hand-computed checks of the latency model's formulas."""

import math

import numpy as np
import pytest

from jmsra_env import DEVICE_CATALOG, LLM_CATALOG, make_config
from jmsra_env import model as m


@pytest.mark.parametrize(
    "name, kib",
    [
        ("llama-3.2-1b", 32),
        ("llama-3.2-3b", 112),
        ("llama-3.1-8b", 128),
        ("qwen2.5-0.5b", 12),
        ("qwen2.5-1.5b", 28),
        ("qwen2.5-7b", 56),
        ("mistral-7b", 128),
    ],
)
def test_kv_bits_per_token_at_fp16_match_the_catalog(name, kib):
    p = LLM_CATALOG[name]
    assert m.kv_bits_per_token(p.n_layers, p.n_kv_heads, p.head_dim, 16) == kib * 1024 * 8


def test_nl_bits_per_token():
    assert m.nl_bits_per_token(128256) == 17  # 2^16 < 128256 <= 2^17
    assert m.nl_bits_per_token(32768) == 15
    assert m.nl_bits_per_token(151936) == 18


def test_decode_is_memory_bound_on_the_orin_nano():
    nano = DEVICE_CATALOG["jetson-orin-nano-8gb"]
    f = m.effective_compute_flops(nano.peak_flops, 0.0, 0.5)
    w = m.effective_mem_bw_bytes_per_s(nano.mem_bw_bytes_per_s, 0.0, 0.7)
    p = 1.24e9
    compute_bound = 2 * p / f  # 0.496 ms
    memory_bound = p * 4 / 8 / w  # 13.0 ms
    assert memory_bound > 20 * compute_bound
    assert m.decode_time_per_token_s(p, 4, f, w) == pytest.approx(memory_bound, rel=1e-15)
    assert memory_bound == pytest.approx(0.62e9 / 47.6e9, rel=1e-12)


def test_load_scales_compute_and_prefill():
    assert m.effective_compute_flops(10e12, 0.5, 0.5) == 2.5e12
    assert m.prefill_time_s(1e9, 1000, 2e12) == pytest.approx(1.0)


def test_nl_tokens_round_up():
    np.testing.assert_array_equal(m.nl_tokens([1000, 256, 7], [0.05, 0.25, 0.1]), [50, 64, 1])


def test_pathloss_and_snr():
    assert m.pathloss_db(1000.0) == pytest.approx(128.1)
    assert m.pathloss_db(100.0) == pytest.approx(128.1 - 37.6)
    # 23 dBm, 100 m, no shadowing, |h|^2 = 1, N0 = -165 dBm/Hz, B = 20 MHz
    snr = m.full_band_snr_db(100.0, 0.0, 1.0, 23.0, -165.0, 20e6)
    assert snr == pytest.approx(23 - 90.5 + 165 - 10 * math.log10(20e6))
    assert m.snr_db_from_gain_hz(m.gain_hz_from_snr_db(snr, 20e6), 20e6) == pytest.approx(snr)


def test_rate_is_increasing_concave_and_bounded_by_the_ceiling():
    a = 1e9
    b = np.geomspace(1e3, 1e12, 200)
    r = m.rate_bps(b, a)
    assert np.all(np.diff(r) > 0)
    lin = m.rate_bps(np.linspace(1e5, 1e10, 500), a)
    assert np.all(np.diff(lin, 2) < 0)  # concave
    ceiling = m.rate_ceiling_bps(a)
    assert ceiling == pytest.approx(a / math.log(2))
    assert np.all(r < ceiling)
    assert r[-1] == pytest.approx(ceiling, rel=1e-3)
    assert m.rate_bps(0.0, a) == 0.0


def test_inverse_rate_round_trips_and_handles_the_ceiling():
    a = np.array([1e6, 1e8, 1e10])
    b = np.array([1e3, 5e6, 2e7])
    r = m.rate_bps(b, a)
    np.testing.assert_allclose(m.inverse_rate_hz(r, a), b, rtol=1e-10)
    np.testing.assert_allclose(m.inverse_rate_lambertw_hz(r, a), b, rtol=1e-10)
    near = m.rate_ceiling_bps(a) * (1 - 1e-7)  # within 1e-7 of the ceiling: still exact
    np.testing.assert_allclose(m.rate_bps(m.inverse_rate_hz(near, a), a), near, rtol=1e-12)
    assert m.inverse_rate_hz(0.0, 1e8) == 0.0
    assert m.inverse_rate_hz(1e8 / math.log(2), 1e8) > 1e20  # at the ceiling (to rounding)
    assert m.inverse_rate_hz(2e8, 1e8) == np.inf


def _one_agent_terms(**kw):
    cfg = make_config(n_agents=1, **kw)
    c = m.model_constants(cfg)
    return m.round_terms(c, [20.0], [10e12], [68e9], [0.0], [1000.0], [100.0], 0.0), c


def test_round_terms_by_hand():
    t, c = _one_agent_terms()
    p = 1.24e9
    f = 0.5 * 10e12
    w = 0.7 * 68e9
    assert t.prefill_s[0] == pytest.approx(2 * p * 1000 / f)
    assert t.extra_compute_s[0, 0] == pytest.approx(100 * p * 0.5 / w)  # NL: K decoded tokens
    assert t.extra_compute_s[0, 1] == 0.0
    assert t.payload_bits[0, 0] == 100 * 17
    assert t.payload_bits[0, 1] == 1000 * 131072
    f_r, w_r = 0.5 * 42e12, 0.7 * 204.8e9
    assert t.receiver_s[0, 0] == pytest.approx(2 * p * 100 / f_r)
    assert t.receiver_s[0, 1] == pytest.approx(1000 * 131072 / 8 / w_r)
    assert t.answer_s == pytest.approx(64 * max(2 * p / f_r, p * 0.5 / w_r))
    assert t.gain_hz[0] == pytest.approx(20e6 * 100.0)


def test_latency_formula_and_cap():
    t, c = _one_agent_terms()
    br = m.latency(t, np.array([1]), np.array([20e6]))
    r = 20e6 * math.log2(1 + 100.0)
    expect = t.prefill_s[0] + 1000 * 131072 / r + t.receiver_s[0, 1] + t.answer_s
    assert br.latency_s == pytest.approx(expect, rel=1e-12)
    assert not br.capped
    zero = m.latency(t, np.array([0]), np.array([0.0]))
    assert zero.capped and zero.latency_s == 60.0 and zero.uncapped_latency_s == np.inf


def test_latency_is_max_over_agents_plus_receiver_sum():
    cfg = make_config(n_agents=3)
    c = m.model_constants(cfg)
    t = m.round_terms(c, [10.0, 20.0, 30.0], [8e12] * 3, [76.8e9] * 3, [0.1, 0.2, 0.3],
                      [500.0, 1000.0, 2000.0], [50.0, 100.0, 300.0], 0.4)
    x = np.array([0, 1, 0])
    b = np.array([5e6, 10e6, 5e6])
    br = m.latency(t, x, b)
    assert br.latency_s == pytest.approx(br.finish_s.max() + br.receiver_s.sum() + t.answer_s)
    np.testing.assert_allclose(br.finish_s, br.compute_s + br.transmission_s)
    np.testing.assert_allclose(br.transmission_s, m.select_medium(t.payload_bits, x) / m.rate_bps(b, t.gain_hz))


def test_wide_batch_reductions_agree_with_numpy():
    rng = np.random.default_rng(3)
    for shape in [(4,), (1, 4), (1024, 4), (512, 16), (3, 700, 8)]:
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(m.sum_over_agents(x), x.sum(axis=-1), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(m.max_over_agents(x), x.max(axis=-1))


def test_functions_broadcast_over_a_batch():
    cfg = make_config()
    c = m.model_constants(cfg)
    rng = np.random.default_rng(0)
    args = [rng.uniform(0, 30, (5, 4)), np.full((5, 4), 8e12), np.full((5, 4), 76.8e9),
            rng.uniform(0, 0.8, (5, 4)), rng.integers(256, 2048, (5, 4)).astype(float),
            rng.integers(10, 200, (5, 4)).astype(float), rng.uniform(0, 0.8, 5)]
    batch = m.round_terms(c, *args)
    x = rng.integers(0, 2, (5, 4))
    b = rng.uniform(1e6, 5e6, (5, 4))
    lat = m.latency(batch, x, b).latency_s
    for i in range(5):
        one = m.round_terms(c, *[a[i] for a in args])
        assert m.latency(one, x[i], b[i]).latency_s == lat[i]
