"""Property tests over the whole float64 range: the rate, the share normalisation, actions that
cannot beat the exact optimum, and configs that are either refused by name or give finite,
in-space observations."""

import math
import re

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jmsra_env import JMSRAEnv, actions, make_config, model, solvers
from jmsra_env.config import _all_keys

FMAX = float(np.finfo(np.float64).max)
B = 20e6
# derandomize: every run replays the same examples, so CI cannot flake on a new draw.
SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Every non-negative float64, subnormals and the largest included; hypothesis also tries the ends.
nonneg = st.floats(min_value=0.0, max_value=FMAX, allow_nan=False, allow_infinity=False, allow_subnormal=True)
# ln(1 + a/b) <= ln(FMAX) - ln(smallest subnormal) = 1454 nats: the rate is at most ~2098 b.
MAX_BITS_PER_HZ = (math.log(FMAX) - math.log(5e-324)) / math.log(2.0)


# -- the rate -------------------------------------------------------------------------------


@SETTINGS
@given(b=nonneg, a=nonneg)
def test_rate_is_finite_non_negative_and_below_the_ceiling(b, a):
    r = float(model.rate_bps(b, a))
    assert math.isfinite(r) and r >= 0.0
    assert r <= float(model.rate_ceiling_bps(a))


@SETTINGS
@given(b=nonneg, a=nonneg)
def test_rate_vanishes_with_the_bandwidth(b, a):
    """r(b) <= 2098 b for every gain: continuous at 0, where it is 0 (no payload in 0 s)."""
    assert float(model.rate_bps(b, a)) <= MAX_BITS_PER_HZ * b * (1.0 + 1e-12)
    assert float(model.rate_bps(0.0, a)) == 0.0


@SETTINGS
@given(b1=nonneg, b2=nonneg, a=nonneg)
def test_rate_is_monotone_in_the_bandwidth(b1, b2, a):
    lo, hi = sorted((b1, b2))
    r_lo, r_hi = float(model.rate_bps(lo, a)), float(model.rate_bps(hi, a))
    # exactly monotone up to float64 rounding of b log1p(a / b) (a few ulp)
    assert r_lo <= r_hi * (1.0 + 8e-16)


def test_rate_at_a_subnormal_bandwidth_is_tiny_not_infinite():
    """The exploit of issue 9: r(1e-300, 1e10) was inf."""
    assert 0.0 < float(model.rate_bps(1e-300, 1e10)) < 1e-296
    assert float(model.rate_bps(5e-324, FMAX)) < 1e-319


def test_rate_at_huge_inputs_saturates_at_the_ceiling():
    assert float(model.rate_bps(FMAX, FMAX)) == FMAX  # log2(2) = 1
    assert float(model.rate_bps(np.inf, 1e10)) == float(model.rate_ceiling_bps(1e10))
    assert float(model.rate_ceiling_bps(FMAX)) == FMAX  # a / ln 2 would overflow


def test_transmission_time_at_a_subnormal_rate_is_infinite():
    assert float(model.transmission_time_s(8e6, 1e-320)) == math.inf
    assert float(model.transmission_time_s(8e6, 0.0)) == math.inf
    assert float(model.transmission_time_s(0.0, 0.0)) == 0.0


# -- shares ---------------------------------------------------------------------------------


@SETTINGS
@given(shares=st.lists(nonneg, min_size=1, max_size=16))
def test_shares_of_any_magnitude_grant_finite_bandwidths_summing_to_the_band(shares):
    s = np.array(shares)
    b = actions.shares_to_bandwidth_hz(s, B)
    assert np.all(np.isfinite(b)) and np.all(b >= 0.0)
    assert b.sum() <= B * (1.0 + 1e-12)
    assert b.sum() >= B * (1.0 - 1e-12)  # the whole band is granted
    assert np.all((b > 0.0) <= (s > 0.0)) or not s.any()  # no share, no bandwidth


def test_shares_whose_sum_overflows_are_accepted_and_split_evenly():
    media, b = actions.decode_dict({"media": np.ones(4), "bandwidth": np.full(4, FMAX)}, 4, B)
    assert np.allclose(b, B / 4, rtol=1e-15)


@pytest.mark.parametrize(
    "bandwidth, message",
    [([1.0, -1.0, 1.0, 1.0], "must be non-negative"), ([1.0, np.inf, 1.0, 1.0], "must be finite"),
     ([1.0, np.nan, 1.0, 1.0], "must be finite")],
)
def test_bad_shares_are_a_value_error_naming_the_field(bandwidth, message):
    with pytest.raises(ValueError, match=f"'bandwidth' {message}"):
        actions.decode_dict({"media": np.ones(4), "bandwidth": bandwidth}, 4, B)


# -- no action beats the exact optimum ------------------------------------------------------


def _rounds(n_seeds=4):
    """The terms of the first two rounds after ``reset(seed)`` for a few seeds, with the optimum."""
    env = gym.make("jmsra_env/JMSRA-v0")
    out = []
    for seed in range(n_seeds):
        env.reset(seed=seed)
        for _ in range(2):
            terms = env.unwrapped.current_terms()
            out.append((terms, float(solvers.exhaustive(terms).latency_s)))
            env.step({"media": np.zeros(4), "bandwidth": np.ones(4)})
    return out


ROUNDS = _rounds()
N = 4
media_st = st.lists(st.integers(0, 1), min_size=N, max_size=N)
shares_st = st.lists(nonneg, min_size=N, max_size=N)
box_st = st.lists(st.floats(-1.0, 1.0, allow_subnormal=True), min_size=2 * N, max_size=2 * N)


@SETTINGS
@given(k=st.integers(0, len(ROUNDS) - 1), media=media_st, shares=shares_st)
def test_no_dict_action_beats_the_exact_optimum(k, media, shares):
    terms, best = ROUNDS[k]
    x, b = actions.decode_dict({"media": media, "bandwidth": shares}, N, B)
    charged = float(model.latency(terms, x, b).latency_s)
    assert charged >= best * (1.0 - 1e-9)


@SETTINGS
@given(k=st.integers(0, len(ROUNDS) - 1), a=box_st)
def test_no_box_action_beats_the_exact_optimum(k, a):
    terms, best = ROUNDS[k]
    x, b = actions.decode_box(np.array(a), terms)
    charged = float(model.latency(terms, x, b).latency_s)
    assert charged >= best * (1.0 - 1e-9)


def test_the_subnormal_share_exploit_is_charged_at_least_the_optimum():
    """Issue 9: after reset(seed=1) this action was charged 2.24 s against an optimum of 4.17 s."""
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=1)
    best = float(solvers.exhaustive(env.unwrapped.current_terms()).latency_s)
    _, reward, _, _, info = env.step({"media": np.ones(4), "bandwidth": [1.0, 1e-310, 1e-310, 1e-310]})
    assert -reward >= best * (1.0 - 1e-9)
    assert info["capped"]  # the three slivers cannot send their caches: capped at 60 s


def test_an_exploit_step_is_charged_what_the_model_computes():
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=1)
    terms = env.unwrapped.current_terms()
    action = {"media": np.ones(4), "bandwidth": [FMAX, 5e-324, FMAX, 0.0]}
    _, reward, *_ = env.step(action)
    assert -reward == float(model.latency(terms, *actions.decode_dict(action, 4, B)).latency_s)


# -- configs ----------------------------------------------------------------------------------

KEYS = sorted(set(_all_keys()) - {"channel", "workload"})
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.floats(min_value=-2.0, max_value=2.0),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.integers(min_value=0, max_value=300),
    st.just(10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.sampled_from(["llama-3.1-8b", "mistral-7b", "snapdragon-8-gen-3", ["jetson-orin-nano-8gb"]]),
    st.lists(st.integers(0, 3), max_size=2),
    st.floats(0.0, 1e6).map(np.float32),
    st.integers(0, 2000).map(np.int64),
)
FIELD = re.compile(r"config field '[\w.\[\]-]+'")


def _assert_finite_in_space(env, obs):
    assert env.observation_space.contains(obs), obs
    assert all(np.all(np.isfinite(v)) for v in obs.values())


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=4))
def test_a_config_is_refused_by_name_or_gives_finite_in_space_observations(overrides):
    try:
        cfg = make_config(**overrides)
    except ValueError as exc:
        assert FIELD.search(str(exc)), str(exc)
        return
    if cfg.n_agents > 64:  # keep the test fast; the fuzz harness covers large teams
        cfg = cfg.with_overrides(n_agents=64)
    env = JMSRAEnv(cfg)
    obs, _ = env.reset(seed=0)
    _assert_finite_in_space(env, obs)
    for _ in range(3):
        obs, reward, _, _, info = env.step({"media": np.ones(cfg.n_agents), "bandwidth": np.ones(cfg.n_agents)})
        _assert_finite_in_space(env, obs)
        assert math.isfinite(reward) and -cfg.latency_cap_s <= reward <= 0.0


@pytest.mark.parametrize(
    "key, value",
    [("channel.distance_max_m", 9e307), ("bandwidth_hz", True), ("n_agents", True), ("episode_rounds", 10**400),
     ("latency_cap_s", 10**400), ("llm", ["llama-3.2-1b"]), ("sender_devices", 3), ("load_max", "0.5"),
     ("jmsra_in_info", 1), ("channel", 5), ("fading_correlation", float("nan"))],
)
def test_a_bad_config_value_is_a_value_error_naming_the_field(key, value):
    with pytest.raises(ValueError, match=rf"config field '[\w.]*{key.split('.')[-1]}'"):
        make_config(**{key: value})


def test_numpy_scalars_are_accepted_as_numbers_and_stored_as_python_numbers():
    cfg = make_config(bandwidth_hz=np.float32(1e7), n_agents=np.int64(6), load_max=np.float64(0.5))
    assert (cfg.channel.bandwidth_hz, cfg.n_agents, cfg.workload.load_max) == (1e7, 6, 0.5)
    assert type(cfg.channel.bandwidth_hz) is float and type(cfg.n_agents) is int


def test_required_snr_on_no_bandwidth_is_infinite_and_zero_for_no_rate():
    assert float(model.required_snr(1e6, 0.0)) == math.inf
    assert float(model.required_snr(1e6, 5e-324)) == math.inf
    assert float(model.required_snr(0.0, 0.0)) == 0.0
