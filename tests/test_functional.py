"""The pure functions over the core's state (jmsra_env.core.functional): the same rounds as the
environment views, bit for bit on NumPy, and no input state ever changed."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils import seeding

import jmsra_env  # noqa: F401 - registers the IDs
from jmsra_env import ScenarioConfig
from jmsra_env.actions import shares_to_bandwidth_hz
from jmsra_env.core import CoreState
from jmsra_env.core import functional as F

M = 3


def _decision(rng, params, m=M):
    media = (rng.random((m, params.n_agents)) < 0.5).astype(np.int8)
    shares = rng.random((m, params.n_agents))
    return media, shares, shares_to_bandwidth_hz(shares, params.channel.bandwidth_hz)


def _same_obs(a, b) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


@pytest.mark.parametrize(
    "env_id", ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Session-v0", "jmsra_env/JMSRA-StaleCSI-v0"]
)
def test_steps_equal_the_vector_env_bit_for_bit_and_leave_states_unchanged(env_id):
    envs = gym.make_vec(env_id, num_envs=M, vectorization_mode="vector_entry_point", autoreset_mode="SameStep")
    params = envs.unwrapped.config
    obs, _ = envs.reset(seed=7)
    rng, _ = seeding.np_random(7)  # the generator the env seeds itself with
    state = F.reset(rng, params, num_envs=M)
    assert _same_obs(F.observe(state, params), obs)
    actions = np.random.default_rng(1)
    ends = 0
    for _ in range(params.episode_rounds + 6):  # through an episode's end
        media, shares, b = _decision(actions, params)
        obs, reward, terminated, truncated, info = envs.step({"media": media, "bandwidth": shares})
        before = pickle.dumps(state)
        new, o, r, te, tr, inf = F.step(rng, state, (media, b), params)
        assert pickle.dumps(state) == before  # the input state is a value
        np.testing.assert_array_equal(r, reward)
        np.testing.assert_array_equal(tr, truncated)
        np.testing.assert_array_equal(te, terminated)
        info = info.get("final_info", info)  # the session envs move an ending step's info there
        shared = set(inf) & set(info)
        assert {"round"} <= shared and (not params.session.enabled or "evictions" in shared), (sorted(inf), sorted(info))
        for key in shared - ({"round"} if tr.any() else set()):  # SameStep shows the reset's round 0
            np.testing.assert_array_equal(inf[key], info[key])
        state = new
        if tr.any():
            ends += 1
            state = F.reset(rng, params, state=state, mask=tr)
            o = F.observe(state, params)
        assert _same_obs(o, obs)
    assert ends == 1


def test_partial_reset_equals_the_vector_env_reset_mask():
    envs = gym.make_vec("jmsra_env/JMSRA-v0", num_envs=M, vectorization_mode="vector_entry_point",
                        autoreset_mode="Disabled")
    params = envs.unwrapped.config
    envs.reset(seed=3)
    rng, _ = seeding.np_random(3)
    state = F.reset(rng, params, num_envs=M)
    actions = np.random.default_rng(2)
    mask = np.array([True, False, True])
    for t in range(20):
        media, shares, b = _decision(actions, params)
        obs, reward, *_ = envs.step({"media": media, "bandwidth": shares})
        state, o, r, *_ = F.step(rng, state, (media, b), params)
        np.testing.assert_array_equal(r, reward)
        if t in (5, 11):
            obs, _ = envs.reset(options={"reset_mask": mask})
            state = F.reset(rng, params, state=state, mask=mask)
            o = F.observe(state, params)
            np.testing.assert_array_equal(state.round, [0, 6 if t == 5 else 12, 0] if t == 5 else state.round)
        assert _same_obs(o, obs)


def test_branching_from_a_state_is_deterministic_and_independent():
    params = ScenarioConfig()
    state = F.reset(np.random.default_rng(0), params, num_envs=4)
    for _ in range(3):
        media, _, b = _decision(np.random.default_rng(5), params, 4)
        state, *_ = F.step(np.random.default_rng(9), state, (media, b), params)
    kv = np.ones((4, params.n_agents), np.int8)
    b = np.full((4, params.n_agents), params.channel.bandwidth_hz / params.n_agents)
    nl = np.zeros_like(kv)
    # two decisions from the same state: each is what a fresh run from that state gives
    branch_kv = F.step(np.random.default_rng(11), state, (kv, b), params)
    branch_nl = F.step(np.random.default_rng(11), state, (nl, b), params)
    again_kv = F.step(np.random.default_rng(11), copy.deepcopy(state), (kv, b), params)
    np.testing.assert_array_equal(branch_kv[2], again_kv[2])
    assert not np.array_equal(branch_kv[2], branch_nl[2])  # the decision matters
    np.testing.assert_array_equal(branch_kv[0].round, state.round + 1)
    # the charge alone, without a step
    br = F.charge(state, kv, b, params)
    np.testing.assert_array_equal(-br.latency_s, branch_kv[2])


def test_torch_state_runs_the_torch_envs_round():
    torch = pytest.importorskip("torch")
    from jmsra_env.backend import torch_namespace

    xp = torch_namespace("cpu", torch.float64)
    envs = gym.make_vec("jmsra_env/JMSRA-v0", num_envs=M, vectorization_mode="vector_entry_point",
                        backend="torch", device="cpu", dtype=torch.float64)
    params = envs.unwrapped.config
    obs, _ = envs.reset(seed=4)
    state = F.reset(xp.generator(4), params, num_envs=M, xp=xp)
    assert isinstance(state, CoreState) and isinstance(state.round, torch.Tensor)
    o = F.observe(state, params)
    assert all(torch.equal(o[k], obs[k]) for k in obs)
    gen = xp.generator(4)
    state = F.reset(gen, params, num_envs=M, xp=xp)
    media = torch.zeros((M, params.n_agents), dtype=torch.int8)
    b = torch.full((M, params.n_agents), params.channel.bandwidth_hz / params.n_agents, dtype=torch.float64)
    _, reward, *_ = envs.step({"media": media.double(), "bandwidth": torch.ones((M, params.n_agents))})
    _, _, r, *_ = F.step(gen, state, (media, b), params)
    assert torch.equal(r, reward)


def test_bad_arguments_name_what_is_wrong():
    params = ScenarioConfig()
    state = F.reset(np.random.default_rng(0), params, num_envs=2)
    with pytest.raises(ValueError, match="params must be"):
        F.reset(np.random.default_rng(0), {"n_agents": 4}, num_envs=2)
    with pytest.raises(ValueError, match="state must be"):
        F.observe({"round": 0}, params)
    with pytest.raises(ValueError, match="action must be the decision"):
        F.step(np.random.default_rng(0), state, 0.5, params)
    with pytest.raises(ValueError, match="'bandwidth_hz' must have shape"):
        F.step(np.random.default_rng(0), state, (np.zeros((2, 4)), np.ones((3, 4))), params)
    with pytest.raises(ValueError, match="mask must be a bool array"):
        F.reset(np.random.default_rng(0), params, state=state, mask=np.array([1, 0]))
    with pytest.raises(ValueError, match="session"):
        F.observe(state, ScenarioConfig().with_overrides({"session": {"enabled": True}}))
