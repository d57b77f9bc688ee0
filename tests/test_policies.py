"""Experts as policies on the environment: the reward is minus the latency the expert predicted."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import actions, make_config, solvers
from jmsra_env.policies import EXPERT_NAMES, ExpertPolicy, make_policy
from jmsra_env.wrappers import BoxActionWrapper

RTOL = 1e-9


@pytest.mark.parametrize("env_id", ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Box-v1"])
@pytest.mark.parametrize("name", EXPERT_NAMES)
def test_reward_is_minus_the_predicted_latency(env_id, name):
    env = gym.make(env_id)  # csi_delay = 0
    policy = make_policy(name, env, seed=5)
    twin = make_policy(name, env, seed=5)  # same draws for the random policy
    assert policy.action_form == ("box" if "Box" in env_id else "dict")
    obs, _ = env.reset(seed=11)
    for _ in range(4):
        predicted = twin.decide(obs)
        action, state = policy.predict(obs, deterministic=True)
        assert state is None
        assert env.action_space.contains(
            action.astype(np.float32) if isinstance(action, np.ndarray) else
            {"media": action["media"], "bandwidth": action["bandwidth"].astype(np.float32)}
        )
        obs, reward, _, _, info = env.step(action)
        assert -reward == pytest.approx(float(predicted.latency_s), rel=RTOL)
        np.testing.assert_array_equal(info["media"], predicted.media)


def test_batched_observations_from_a_vector_env():
    venv = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=3, vectorization_mode="sync")
    policy = make_policy("jmsra", venv)
    assert policy.action_form == "box" and policy.config.n_agents == 4
    obs, _ = venv.reset(seed=2)
    for _ in range(3):
        d = policy.decide(obs)
        action, _ = policy.predict(obs)
        assert action.shape == (3, 8) and d.latency_s.shape == (3,)
        obs, reward, _, _, _ = venv.step(action)
        np.testing.assert_allclose(-reward, d.latency_s, rtol=RTOL)
    venv.close()


def test_native_vector_env_dict_form():
    venv = gym.make_vec("jmsra_env/JMSRA-v0", num_envs=4, vectorization_mode="vector_entry_point")
    policy = make_policy("optimal", venv)
    assert policy.action_form == "dict"
    obs, _ = venv.reset(seed=9)
    d = policy.decide(obs)
    action, _ = policy.predict(obs)
    assert action["media"].shape == (4, 4)
    _, reward, _, _, _ = venv.step(action)
    np.testing.assert_allclose(-reward, d.latency_s, rtol=RTOL)


def test_batch_decisions_equal_one_at_a_time():
    venv = gym.make_vec("jmsra_env/JMSRA-N8-v0", num_envs=5, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=4)
    policy = make_policy("jmsra", venv)
    batch = policy.decide(obs)
    for i in range(5):
        one = policy.decide({k: v[i] for k, v in obs.items()})
        assert float(one.latency_s) == pytest.approx(batch.latency_s[i], rel=RTOL)


def test_wrapped_env_and_sb3_vec_env():
    from stable_baselines3.common.vec_env import DummyVecEnv

    base = gym.make("jmsra_env/JMSRA-v0")
    wrapped = BoxActionWrapper(base)
    policy = make_policy("kv-only", wrapped)
    assert policy.action_form == "box"  # the wrapper's action space decides the form
    obs, _ = wrapped.reset(seed=1)
    d = policy.decide(obs)
    _, reward, _, _, _ = wrapped.step(policy.predict(obs)[0])
    assert -reward == pytest.approx(float(d.latency_s), rel=RTOL)

    vec = DummyVecEnv([lambda: gym.make("jmsra_env/JMSRA-Box-v1")] * 2)
    policy = make_policy("nl-only", vec)
    assert policy.action_form == "box" and policy.config == make_config()
    vec.seed(3)
    obs = vec.reset()
    d = policy.decide(obs)
    _, reward, _, _ = vec.step(policy.predict(obs)[0])
    np.testing.assert_allclose(-reward, d.latency_s.astype(np.float32), rtol=1e-6)  # SB3 rewards are float32


def test_policy_from_a_config():
    cfg = make_config(n_agents=3)
    policy = make_policy("threshold-equal", config=cfg, action_form="box")
    assert isinstance(policy, ExpertPolicy)
    env = gym.make("jmsra_env/JMSRA-Box-v1", config={"n_agents": 3})
    obs, _ = env.reset(seed=0)
    action, _ = policy.predict(obs)
    assert action.shape == (6,)
    m, b = actions.decode_box(action, env.unwrapped.observed_terms())
    d = policy.decide(obs)
    np.testing.assert_array_equal(m, d.media)
    np.testing.assert_allclose(b, d.bandwidth_hz, rtol=1e-9)
    assert make_policy("jmsra", config={"n_agents": 2}).config.n_agents == 2


def test_bad_input():
    env = gym.make("jmsra_env/JMSRA-v0")
    with pytest.raises(ValueError, match="unknown expert 'best'.*valid names: optimal, jmsra"):
        make_policy("best", env)
    with pytest.raises(ValueError, match="needs an env or a config"):
        make_policy("jmsra")
    with pytest.raises(ValueError, match="action_form"):
        make_policy("jmsra", env, action_form="tuple")
    policy = make_policy("jmsra", env)
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(M, N\) with N = 4"):
        policy.predict({k: np.concatenate([v, v]) for k, v in obs.items()})
    with pytest.raises(ValueError, match="Dict observation"):
        policy.predict(np.zeros(4))
    n17 = gym.make("jmsra_env/JMSRA-v0", config={"n_agents": 17})
    opt = make_policy("optimal", n17)
    with pytest.raises(ValueError, match="N <= 16"):
        opt.predict(n17.reset(seed=0)[0])


def test_jmsra_in_info_matches_the_jmsra_policy():
    env = gym.make("jmsra_env/JMSRA-Box-v1", config={"jmsra_in_info": True})
    policy = make_policy("jmsra", env)
    obs, _ = env.reset(seed=8)
    for _ in range(3):
        obs, reward, _, _, info = env.step(policy.predict(obs)[0])
        assert info["jmsra_latency_s"] == pytest.approx(-reward, rel=RTOL)


def test_expert_names_are_the_solvers():
    assert EXPERT_NAMES == solvers.EXPERT_NAMES
    assert set(EXPERT_NAMES) == {
        "optimal", "jmsra", "nl-only", "kv-only", "nl-only-equal", "kv-only-equal", "threshold-equal", "random",
    }
