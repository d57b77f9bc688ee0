"""The stale-aware expert: the least expected latency given a stale channel (jmsra_env.stale)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import make_config, model, solvers
from jmsra_env.evaluation import core
from jmsra_env.policies import EXPERT_NAMES, make_policy
from jmsra_env.stale import ChannelPosterior, StaleAwarePolicy, expected_latency, stale_aware

STALE_ID = "jmsra_env/JMSRA-StaleCSI-v0"


def _stale_rounds(episodes=2, seed=20_000, **overrides):
    cfg, _ = core.scenario_from_env_id(STALE_ID, overrides or None)
    return core.draw_rounds(cfg, episodes, seed)


def test_stale_aware_is_the_optimum_with_fresh_csi():
    env = gym.make("jmsra_env/JMSRA-v0")
    policy = make_policy("stale-aware", env, seed=0)
    assert isinstance(policy, StaleAwarePolicy) and policy.label == "stale-aware"
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        d = policy.decide(obs)
        opt = solvers.solve("optimal", env.unwrapped.observed_terms())
        np.testing.assert_array_equal(d.media, opt.media)
        obs, reward, *_ = env.step(policy.predict(obs)[0])
        assert -reward == pytest.approx(float(opt.latency_s), rel=1e-9)


def test_stale_aware_is_the_optimum_when_the_channel_stands_still():
    # one round stale, but nothing moves: the stale SNR is today's
    rounds = _stale_rounds(1, **{"fading_correlation": 1.0, "shadowing_correlation": 1.0, "speed_mps": 0.0})
    policy = StaleAwarePolicy(rounds.config, samples=8)
    policy.reset(rounds.config, 0)
    d = policy.decide({k: v[:32] for k, v in rounds.obs.items()})
    charged = core.charge(rounds.terms[:32], d.media, d.bandwidth_hz).latency_s
    optimum = solvers.solve("optimal", rounds.terms[:32]).latency_s
    np.testing.assert_allclose(charged, optimum, rtol=1e-9)


def test_stale_aware_decisions_fill_the_band():
    rounds = _stale_rounds(1)
    policy = make_policy("stale-aware", config=rounds.config, seed=1)
    d = policy.decide({k: v[:40] for k, v in rounds.obs.items()})
    B = rounds.config.channel.bandwidth_hz
    assert d.media.shape == (40, 4) and set(np.unique(d.media)) <= {0, 1}
    assert np.all(d.bandwidth_hz > 0)
    np.testing.assert_allclose(d.bandwidth_hz.sum(axis=-1), B, rtol=1e-12)
    single = policy.decide({k: v[0] for k, v in rounds.obs.items()})
    assert single.media.shape == (4,) and single.bandwidth_hz.sum() == pytest.approx(B, rel=1e-12)


def test_stale_aware_is_never_worse_than_jmsra_on_its_own_draws():
    rounds = _stale_rounds(1)
    terms = rounds.observed_terms()[:48]
    post = ChannelPosterior(rounds.config)
    draws = post.sample_snr_db(np.random.default_rng(0), rounds.obs["snr_db"][:48], 32)
    gains = model.gain_hz_from_snr_db(draws, rounds.config.channel.bandwidth_hz)
    d, value = stale_aware(terms, gains)
    jm = solvers.jmsra(terms)
    jm_value = expected_latency(terms, gains, jm.media[:, None], jm.bandwidth_hz[:, None])[:, 0]
    assert np.all(value <= jm_value * (1 + 1e-9))
    np.testing.assert_allclose(value, expected_latency(terms, gains, d.media[:, None], d.bandwidth_hz[:, None])[:, 0])


def test_stale_aware_beats_jmsra_in_expectation_on_fixed_seeds():
    rounds = _stale_rounds(2)
    terms = rounds.observed_terms()
    stale = StaleAwarePolicy(rounds.config, samples=32)
    stale.reset(rounds.config, 0)
    d = stale.decide(rounds.obs)
    jm = solvers.jmsra(terms)
    # judged on fresh draws of today's channel (the expectation the expert minimises, without the noise of one draw)
    draws = ChannelPosterior(rounds.config).sample_snr_db(np.random.default_rng(7), rounds.obs["snr_db"], 256)
    gains = model.gain_hz_from_snr_db(draws, rounds.config.channel.bandwidth_hz)
    ours = expected_latency(terms, gains, d.media[:, None], d.bandwidth_hz[:, None])[:, 0].mean()
    theirs = expected_latency(terms, gains, jm.media[:, None], jm.bandwidth_hz[:, None])[:, 0].mean()
    assert ours < 0.97 * theirs


def test_channel_draws_are_calibrated():
    # the true SNR's rank among the draws is uniform when the draws follow its conditional law
    rounds = _stale_rounds(8, seed=500)
    B = rounds.config.channel.bandwidth_hz
    draws = ChannelPosterior(rounds.config).sample_snr_db(np.random.default_rng(1), rounds.obs["snr_db"], 9)
    truth = model.snr_db_from_gain_hz(rounds.terms.gain_hz, B)
    rank = (draws < truth[:, None, :]).sum(axis=1).reshape(-1)  # 0..9: ten equally likely values
    share = np.bincount(rank, minlength=10) / rank.size
    assert np.max(np.abs(share - 0.1)) < 0.03


def test_same_seed_same_decisions_and_the_policy_is_opt_in():
    rounds = _stale_rounds(1)
    obs = {k: v[:8] for k, v in rounds.obs.items()}
    a, b = (StaleAwarePolicy(rounds.config, seed=4, samples=16) for _ in range(2))
    np.testing.assert_array_equal(a.decide(obs).bandwidth_hz, b.decide(obs).bandwidth_hz)
    assert "stale-aware" not in EXPERT_NAMES  # the default expert lists stay as they were


def test_stale_aware_in_the_box_env_with_the_deadline_encoding():
    env = gym.make("jmsra_env/JMSRA-StaleCSI-Box-v1", action_encoding="deadline")
    policy = make_policy("stale-aware", env, seed=2)
    twin = make_policy("stale-aware", env, seed=2)
    obs, _ = env.reset(seed=5)
    for _ in range(2):
        d = twin.decide(obs)
        truth = env.unwrapped.current_terms()
        obs, reward, *_ = env.step(policy.predict(obs)[0])
        assert -reward == pytest.approx(float(core.charge(truth, d.media, d.bandwidth_hz).latency_s), rel=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="samples"):
        StaleAwarePolicy(make_config(csi_delay=1), samples=0)
    with pytest.raises(ValueError, match="single-round"):
        make_policy("stale-aware", config={"session.enabled": True})


def test_the_cloning_set_keeps_the_stale_aware_split():
    from jmsra_agents.bc import expert_dataset

    from jmsra_env import actions, encoding
    from jmsra_env.bandwidth import optimal_bandwidth
    from jmsra_env.world import WorldProcess

    cfg, _ = core.scenario_from_env_id(STALE_ID)
    data = expert_dataset(cfg, 8, seed=3, features="physics", encoding="deadline", expert="stale-aware", n_worlds=8)
    world = WorldProcess(cfg, 8)  # the rounds expert_dataset drew
    world.reset(np.random.default_rng(3))
    obs = world.observation()
    consts = model.model_constants(cfg)
    terms = model.terms_from_observation(consts, obs)
    d = make_policy("stale-aware", config=cfg, seed=3).decide(obs)
    env_action = encoding.to_env_action("deadline", data.actions.astype(np.float64), obs, consts)
    media, b = actions.decode_box(env_action, terms)
    np.testing.assert_array_equal(media, d.media)
    np.testing.assert_allclose(b, d.bandwidth_hz, rtol=1e-3)  # float32 targets
    p2, _ = optimal_bandwidth(terms, d.media)  # what one finish target per round would have given
    assert np.max(np.abs(d.bandwidth_hz / p2 - 1)) > 0.05


def test_the_evaluation_runs_it_when_named_only():
    cfg, _ = core.scenario_from_env_id(STALE_ID)
    named, _ = core.resolve_experts(["jmsra", "stale-aware"], cfg)
    assert [p.label for p in named] == ["jmsra", "stale-aware"]
    default, _ = core.resolve_experts(None, cfg)
    assert "stale-aware" not in [p.label for p in default]
