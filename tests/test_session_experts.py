"""Session experts: pool-aware never overflows by its own choice, the rollout, policies on the IDs."""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmsra_env import make_config, model, session, solvers
from jmsra_env.policies import make_policy
from jmsra_env.session_experts import (
    BASE_POLICIES,
    Candidates,
    base_decisions,
    SESSION_EXPERT_NAMES,
    pool_aware,
    rollout,
    withhold_kv,
)

CFG = make_config({"session.enabled": True})
CONSTS = model.model_constants(CFG)
BPT = CONSTS.kv_bits_per_token / 8.0


def random_round(rng, m, state):
    """A session round's terms for random exogenous inputs and contexts above the seen prefix."""
    n = CFG.n_agents
    new = rng.integers(64, 2048, (m, n)).astype(float)
    L = state.seen_tokens + new
    terms = session.session_terms(
        CONSTS, state, rng.uniform(0, 40, (m, n)), np.full((m, n), 10e12), np.full((m, n), 68e9),
        rng.uniform(0, 0.8, (m, n)), L, new, rng.uniform(0.05, 0.25, (m, n)), rng.uniform(0, 0.8, m),
    )
    return terms, L


def test_withhold_admits_the_cheapest_senders_that_fit():
    s = session.SessionState(
        np.array([1000.0, 1000, 1000]), np.array([1000.0, 0, 0]), np.array([1, -5, -5]), 2600 * BPT, BPT
    )
    # adding: agent 0 +200, agent 1 +1200, agent 2 +1500; room 1600 -> admit 0 and 1, withhold 2
    media = withhold_kv([1, 1, 1], s, [1200, 1200, 1500])
    assert media.tolist() == [1, 1, 0]
    assert withhold_kv([0, 0, 1], s, [1200, 1200, 1500]).tolist() == [0, 0, 1]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), pool_tokens=st.integers(500, 20000))
def test_pool_aware_never_overflows_by_its_own_choice(seed, pool_tokens):
    rng = np.random.default_rng(seed)
    s = session.initial_state(CFG, (6,), kv_pool_bytes=pool_tokens * BPT)
    for t in range(5):
        terms, L = random_round(rng, 6, s)
        d = pool_aware(terms, s, L)
        s, evicted = session.transition(s, d.media, L, t)
        assert not evicted.any()


def test_pool_aware_is_jmsra_when_the_pool_is_unbounded():
    rng = np.random.default_rng(0)
    s = session.initial_state(CFG, (32,), kv_pool_bytes=np.inf)
    terms, L = random_round(rng, 32, s)
    a, b = pool_aware(terms, s, L), solvers.jmsra(terms)
    assert np.array_equal(a.media, b.media) and np.array_equal(a.bandwidth_hz, b.bandwidth_hz)


def test_pool_aware_re_solves_the_bandwidth_of_the_changed_rows():
    rng = np.random.default_rng(1)
    s = session.initial_state(CFG, (32,), kv_pool_bytes=1500 * BPT)
    terms, L = random_round(rng, 32, s)
    d = pool_aware(terms, s, L)
    changed = (d.media != solvers.jmsra(terms).media).any(axis=-1)
    assert changed.any()
    b, lat = solvers.optimal_bandwidth(terms[changed], d.media[changed])
    np.testing.assert_allclose(d.bandwidth_hz[changed], b)
    np.testing.assert_array_equal(d.latency_s[changed], lat)


def test_rollout_over_one_round_picks_the_best_candidate_now():
    rng = np.random.default_rng(2)
    s = session.initial_state(CFG, (16,), kv_pool_bytes=3000 * BPT)
    terms, L = random_round(rng, 16, s)
    d = rollout(CONSTS, terms, s, L, [])
    cands = Candidates.for_agents(4)
    c = len(cands)
    assert c == 3 + 2 * 4 and cands.kinds[:3] == BASE_POLICIES
    t_all = model.concat_terms([terms] * c)
    tiled = session.SessionState(*(np.tile(x, (c, 1)) for x in (s.seen_tokens, s.kv_tokens, s.last_kv_round)),
                                 s.kv_pool_bytes, s.kv_bytes_per_token)
    media, bw = base_decisions(t_all, tiled, np.tile(L, (c, 1)), cands)
    each = model.latency(t_all, media, bw).latency_s.reshape(c, 16)
    np.testing.assert_array_equal(d.latency_s, each.min(axis=0))
    np.testing.assert_array_equal(each[0], solvers.jmsra(terms).latency_s)
    np.testing.assert_array_equal(each[1], pool_aware(terms, s, L).latency_s)
    assert (d.latency_s <= solvers.nl_only(terms).latency_s).all()


def test_candidates_keep_an_agent_off_or_on_kv():
    rng = np.random.default_rng(3)
    s = session.initial_state(CFG, (16,), kv_pool_bytes=np.inf)
    terms, L = random_round(rng, 16, s)
    off = pool_aware(terms, s, L, kv_allowed=np.array([False, True, True, True]))
    on = pool_aware(terms, s, L, kv_forced=np.array([True, False, False, False]))
    assert (off.media[:, 0] == 0).all() and (on.media[:, 0] == 1).all()


def _deterministic_config():
    """A session whose exogenous process is constant but for the known token growth: the
    persistent forecast is exact."""
    return {
        "session.new_tokens_min": 300, "session.new_tokens_max": 300, "nl_ratio_min": 0.15,
        "nl_ratio_max": 0.15, "load_step": 0.0, "speed_mps": 0.0, "fading_correlation": 1.0,
        "shadowing_correlation": 1.0, "session.kv_pool_bytes": 4 * 64 * 2**20, "episode_rounds": 20,
    }


def test_lookahead_equals_clairvoyant_when_the_forecast_is_exact():
    envs = gym.make_vec("jmsra_env/JMSRA-Session-v0", num_envs=8, vectorization_mode="vector_entry_point",
                        config=_deterministic_config())
    look = make_policy("lookahead", envs, horizon=4)
    clair = make_policy("clairvoyant", envs, horizon=4)
    obs, _ = envs.reset(seed=0)
    for t in range(16):  # rounds whose horizon ends inside the episode
        a, b = look.decide(obs), clair.decide(obs)
        assert np.array_equal(a.media, b.media) and np.array_equal(a.bandwidth_hz, b.bandwidth_hz), t
        obs, *_ = envs.step(look.predict(obs)[0])


@pytest.mark.parametrize("name", SESSION_EXPERT_NAMES)
@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Session-v0", "jmsra_env/JMSRA-Session-N8-Box-v1"])
def test_every_session_expert_plays_a_session_as_a_policy(name, id_):
    env = gym.make(id_, config={"episode_rounds": 6})
    policy = make_policy(name, env, horizon=3)
    obs, _ = env.reset(seed=0)
    for _ in range(6):
        action, _ = policy.predict(obs)
        expected = policy.decide(obs).latency_s
        obs, reward, _, trunc, info = env.step(action)
        assert reward == pytest.approx(-expected, rel=1e-9)
    assert trunc


def test_session_experts_decide_batches_row_by_row():
    envs = gym.make_vec("jmsra_env/JMSRA-Session-TightPool-v0", num_envs=4, vectorization_mode="vector_entry_point")
    policy = make_policy("lookahead", envs, horizon=3)
    obs, _ = envs.reset(seed=1)
    for _ in range(3):
        obs, *_ = envs.step(policy.predict(obs)[0])
    batch = policy.decide(obs)
    for i in range(4):
        row = policy.decide({k: v[i] for k, v in obs.items()})
        assert np.array_equal(row.media, batch.media[i])


def test_session_experts_need_a_session_and_clairvoyant_needs_the_env():
    with pytest.raises(ValueError, match="session"):
        make_policy("pool-aware", gym.make("jmsra_env/JMSRA-v0"))
    with pytest.raises(ValueError, match="clairvoyant"):
        make_policy("clairvoyant", config=CFG)
    with pytest.raises(ValueError, match="horizon"):
        make_policy("lookahead", config=CFG, horizon=0)
    assert make_policy("lookahead", config=CFG).horizon >= 1  # causal: no env needed

