"""The multi-agent view of the session scenarios: same API, same episodes as the central session env."""

from __future__ import annotations

import numpy as np
import pytest

from jmsra_env.multiagent import (
    BROADCAST_KEYS,
    DecentralisedRule,
    joint_to_central_action,
    make_team_policy,
    parallel_env,
)
from jmsra_env.session_env import SESSION_OBS_KEYS, JMSRASessionEnv

ROUNDS = 64  # one episode of the default session scenarios


# The PettingZoo API and seed tests on the session scenarios are in tests/test_multiagent.py.


def test_every_session_id_wraps_the_session_env():
    for scenario in ("JMSRA-Session", "jmsra_env/JMSRA-Session-Box-v1", "JMSRA-Session-LargePool-v0"):
        assert isinstance(parallel_env(scenario).central_env, JMSRASessionEnv)
    assert isinstance(parallel_env({"session.enabled": True}).central_env, JMSRASessionEnv)
    tight = parallel_env("JMSRA-Session-TightPool")
    assert tight.config.kv_pool_bytes == 4 * 64 * (1 << 20)


def test_agent_observes_its_own_session_quantities_and_the_pool_broadcast():
    ma = parallel_env("JMSRA-Session-v0")
    obs, _ = ma.reset(seed=3)
    for _ in range(5):  # some KV so that the receiver holds caches
        obs, *_ = ma.step({a: np.array([1.0, 1.0]) for a in ma.agents})
    central = ma.central_observation
    for i, agent in enumerate(ma.possible_agents):
        for key in ("new_tokens", "unseen_tokens", "kv_resident_tokens", "rounds_since_kv"):
            assert obs[agent][key].shape == (1,)
            assert obs[agent][key][0] == central[key][i]
        for key in ("receiver_load", "kv_pool_used_fraction", "kv_pool_bytes"):
            np.testing.assert_array_equal(obs[agent][key], central[key])
        assert obs[agent] in ma.observation_space(agent)
    assert set(SESSION_OBS_KEYS) <= set(obs["agent_0"])
    assert central["kv_pool_used_fraction"][0] > 0
    assert {"kv_pool_used_fraction", "kv_pool_bytes"} <= set(BROADCAST_KEYS)


def test_one_agent_session_keeps_the_pool_keys_broadcast():
    ma = parallel_env("JMSRA-Session-v0", n_agents=1)
    assert set(ma.broadcast_keys) == {"receiver_load", "kv_pool_used_fraction", "kv_pool_bytes"}
    assert "kv_resident_tokens" in ma.per_agent_keys


def test_joint_actions_earn_the_central_session_envs_rewards_with_evictions():
    ma = parallel_env("JMSRA-Session-TightPool-v0")
    central = JMSRASessionEnv(base_config={"session.kv_pool_bytes": 4 * 64 * (1 << 20)})
    rng = np.random.default_rng(1)
    evictions = 0
    for episode in range(2):
        ma.reset(seed=40 + episode)
        cobs, _ = central.reset(seed=40 + episode)
        while ma.agents:
            for k in cobs:
                np.testing.assert_array_equal(ma.central_observation[k], cobs[k])
            joint = rng.random((4, 2))
            joint[:, 0] = rng.random(4) < 0.7  # KV-heavy: the tight pool overflows
            _, rewards, _, truncations, infos = ma.step(dict(zip(ma.possible_agents, joint)))
            cobs, reward, _, truncated, info = central.step(joint_to_central_action(joint))
            assert set(rewards.values()) == {reward}
            assert all(truncations[a] == truncated for a in rewards)
            assert [infos[a]["evicted"] for a in ma.possible_agents] == info["evicted"].tolist()
            assert infos["agent_0"]["evictions"] == info["evictions"]
            assert infos["agent_3"]["kv_pool_used_fraction"] == info["kv_pool_used_fraction"]
            evictions += info["evictions"]
        assert truncated
    assert evictions > 0


def test_state_is_the_flattened_central_session_observation():
    ma = parallel_env("JMSRA-Session-v0")
    ma.reset(seed=2)
    ma.step({a: np.array([1.0, 0.5]) for a in ma.agents})
    state = ma.state()
    expected = np.concatenate([ma.central_observation[k].ravel() for k in ma.state_keys])
    np.testing.assert_array_equal(state, expected)
    assert "kv_resident_tokens" in ma.state_keys and "kv_pool_used_fraction" in ma.state_keys
    assert state in ma.state_space


@pytest.mark.parametrize("name", ["threshold", "proportional"])
def test_decentralised_yardsticks_roll_whole_sessions_from_their_own_observations(name):
    ma = parallel_env("JMSRA-Session-TightPool")
    obs, _ = ma.reset(seed=9)
    rule = DecentralisedRule(name, ma.config)
    total = 0.0
    while ma.agents:
        acts = rule.act(obs)
        joint = np.stack([acts[a] for a in ma.possible_agents])
        np.testing.assert_allclose(joint, rule.agent_actions(ma.central_observation), rtol=1e-6)
        obs, rewards, *_ = ma.step(acts)
        total -= rewards["agent_0"]
    assert 0 < total / ROUNDS < ma.config.latency_cap_s


def test_threshold_rule_on_a_session_is_the_threshold_expert_on_the_charged_session_terms():
    from jmsra_env import model
    from jmsra_env.solvers import solve

    ma = parallel_env("JMSRA-Session-v0")
    ma.reset(seed=0)
    rule = DecentralisedRule("threshold", ma.config)
    for _ in range(6):  # the receiver's caches change the KV deltas round after round
        media, b = rule.decide(ma.central_observation)
        truth = ma.current_terms()
        expert = solve("threshold-equal", truth)
        np.testing.assert_array_equal(media, expert.media)
        charged = model.latency(truth, media, b).latency_s
        _, rewards, *_ = ma.step(dict(zip(ma.possible_agents, np.stack([media, b / b.max()], axis=-1))))
        assert -rewards["agent_0"] == pytest.approx(float(charged), rel=1e-12)
        np.testing.assert_allclose(charged, expert.latency_s, rtol=1e-12)


def test_session_experts_act_for_the_team():
    ma = parallel_env("JMSRA-Session-v0")
    obs, _ = ma.reset(seed=1)
    for name in ("jmsra", "lookahead", "pool-aware"):
        team = make_team_policy(name, ma.config)
        media, b = team.decide(ma.central_observation)
        assert media.shape == (4,) and b.sum() == pytest.approx(ma.config.channel.bandwidth_hz)
    with pytest.raises(ValueError, match="unknown team policy 'lookahead'"):
        make_team_policy("lookahead", parallel_env("JMSRA-v0").config)


def test_torchrl_check_env_specs_on_the_wrapped_session_env():
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import check_env_specs

    check_env_specs(PettingZooWrapper(parallel_env("JMSRA-Session-v0"), return_state=True, seed=0))


# -- MAPPO on sessions ------------------------------------------------------------------------------


def test_session_features_of_an_agent_hold_its_own_receiver_state():
    from jmsra_agents.marl import FeatureCodec

    ma = parallel_env("JMSRA-Session-v0")
    ma.reset(seed=0)
    ma.step({a: np.array([float(a == "agent_1"), 1.0]) for a in ma.agents})  # only agent_1 sends KV
    codec = FeatureCodec(ma.config)
    assert codec.n_agent_features == 27 and codec.n_state_features == 23 * 4 + 4
    f = codec.raw_agent_features(ma.central_observation)
    assert f.shape == (4, 27)
    resident = f[:, 20 + 2]  # log10(1 + kv_resident_tokens)
    assert resident[1] > 0 and resident[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    assert len(set(f[:, -2].tolist())) == 1 and f[0, -2] > 0  # the pool's usage, broadcast
    assert codec.state_features(ma.central_observation).shape == (codec.n_state_features,)


def test_torchrl_check_env_specs_on_the_mappo_session_env():
    from torchrl.envs.utils import check_env_specs

    from jmsra_agents.marl import FeatureCodec, make_torchrl_env

    cfg = parallel_env("JMSRA-Session-v0").config
    env = make_torchrl_env(cfg, FeatureCodec(cfg), "mappo", seed=0)
    check_env_specs(env)
    assert env.observation_spec["agents", "observation"].shape[-1] == 27


def test_gamma_defaults_to_zero_for_single_rounds_and_positive_for_sessions():
    from jmsra_agents.marl import SESSION_GAMMA, MARLConfig, default_gamma

    assert MARLConfig().gamma is None
    assert default_gamma(parallel_env("JMSRA-v0").config) == 0.0
    assert default_gamma(parallel_env("JMSRA-Session-v0").config) == SESSION_GAMMA > 0


@pytest.fixture(scope="module")
def tiny_session_run(tmp_path_factory):
    from jmsra_agents.marl import MARLConfig, train

    run_dir = tmp_path_factory.mktemp("marl_session") / "mappo"
    hp = MARLConfig(
        total_frames=256, frames_per_batch=128, minibatch_size=64, n_epochs=1, hidden=16, depth=1,
        eval_rounds=64, eval_every=1, checkpoint_every=0, bc_steps=5, bc_rounds=256,
    )
    cfg = parallel_env("JMSRA-Session-v0").config
    summary = train(cfg, hp, run_dir, device="cpu", env_id="jmsra_env/JMSRA-Session-v0")
    return run_dir, summary


def test_tiny_mappo_run_on_a_session_trains_with_a_discount(tiny_session_run):
    import json

    run_dir, summary = tiny_session_run
    meta = json.loads((run_dir / "marl.json").read_text())
    assert summary["frames"] == 256 and summary["gamma"] == meta["marl"]["gamma"] == 0.9
    assert meta["features"] == "physics+session" and meta["env_id"] == "jmsra_env/JMSRA-Session-v0"
    assert 0 < summary["jmsra_latency_s"] < 60 and 0 < summary["eval_latency_s"] < 60


def test_tiny_session_mappo_policy_loads_back_and_rolls_a_session(tiny_session_run):
    from jmsra_agents.marl import load_marl_policy

    run_dir, _ = tiny_session_run
    policy = load_marl_policy(run_dir)
    assert policy.codec.session and policy.kind == "marl" and policy.label == "mappo:mappo"
    ma = parallel_env("JMSRA-Session-v0")
    obs, _ = ma.reset(seed=0)
    while ma.agents:
        acts = policy.act(obs)
        obs, rewards, *_ = ma.step({a: np.clip(v, 0.0, 1.0) for a, v in acts.items()})
    assert rewards["agent_0"] < 0


def test_session_policy_refuses_single_round_observations(tiny_session_run):
    from jmsra_agents.marl import load_marl_policy
    from jmsra_env.multiagent import parallel_env as pe

    policy = load_marl_policy(tiny_session_run[0])
    obs, _ = pe("JMSRA-v0").reset(seed=0)
    with pytest.raises(ValueError, match="trained on a session scenario"):
        policy.act(obs)
