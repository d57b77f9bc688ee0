"""Minari datasets of expert episodes: written, read back, replayed; behaviour cloning from one."""

import os

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env
from jmsra_env import model
from jmsra_env.datasets import collect_dataset, load_dataset
from jmsra_env.policies import make_policy

CONFIG = {"episode_rounds": 8}


def test_a_dataset_read_back_equals_the_episodes_that_produced_it(tmp_path):
    collect_dataset("jmsra", "jmsra_env/JMSRA-v0", n_episodes=2, seed=5, config=CONFIG, root=tmp_path)
    ds = load_dataset("jmsra_env/JMSRA-Box/jmsra-v0", root=tmp_path)
    assert ds.total_episodes == 2 and ds.total_steps == 16
    env = gym.make("jmsra_env/JMSRA-Box-v1", config=CONFIG)
    expert = make_policy("jmsra", env)
    for e, ep in enumerate(ds.iterate_episodes()):
        obs, _ = env.reset(seed=5 + e)
        assert ep.actions.dtype == np.float32
        for t in range(8):
            for key, value in obs.items():
                np.testing.assert_array_equal(ep.observations[key][t], value, err_msg=key)
            action, _ = expert.predict(obs)
            np.testing.assert_array_equal(ep.infos["action_float64"][t + 1], action)
            np.testing.assert_array_equal(ep.actions[t], action.astype(np.float32))
            obs, reward, terminated, truncated, info = env.step(action)
            assert ep.rewards[t] == reward and ep.infos["latency_s"][t + 1, 0] == info["latency_s"]
            np.testing.assert_array_equal(ep.infos["bandwidth_hz"][t + 1], info["bandwidth_hz"])
            assert ep.terminations[t] == terminated and ep.truncations[t] == truncated
        for key, value in obs.items():
            np.testing.assert_array_equal(ep.observations[key][8], value, err_msg=key)


def test_float32_dataset_actions_keep_the_charged_latency(tmp_path):
    ds = collect_dataset("optimal", n_episodes=1, config=CONFIG, root=tmp_path)
    ep = next(ds.iterate_episodes())
    consts = model.model_constants(ds.recover_environment().unwrapped.config)
    terms = model.terms_from_observation(consts, {k: v[:-1] for k, v in ep.observations.items()})
    media, b = jmsra_env.decode_box(ep.actions, terms)
    np.testing.assert_allclose(model.latency(terms, media, b).latency_s, -ep.rewards, rtol=1e-6)


def test_a_predict_callable_is_recorded_under_its_name(tmp_path):
    def zero_policy(obs):
        return np.zeros(8), None

    ds = collect_dataset(zero_policy, n_episodes=1, config=CONFIG, root=tmp_path)
    assert ds.storage.metadata["algorithm_name"] == "zero-policy"
    assert np.all(next(ds.iterate_episodes()).actions == 0.0)


def test_the_dataset_root_is_the_argument_and_the_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    collect_dataset("nl-only", n_episodes=1, config=CONFIG, root=tmp_path / "here")
    assert (tmp_path / "here" / "jmsra_env" / "JMSRA-Box" / "nl-only-v0" / "data").is_dir()
    assert os.environ["MINARI_DATASETS_PATH"] == str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="already exists"):
        collect_dataset("nl-only", n_episodes=1, config=CONFIG, root=tmp_path / "here")


def test_a_relative_root_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    collect_dataset("kv-only", n_episodes=1, config=CONFIG, root="rel/minari")
    assert load_dataset("jmsra_env/JMSRA-Box/kv-only-v0", root="rel/minari").total_steps == 8


def test_behaviour_cloning_from_a_minari_dataset(tmp_path):
    # The snippet of docs/libraries.md ("Behaviour cloning from a Minari dataset"), verbatim.
    from jmsra_env.encoding import encode_deadline
    from jmsra_env.features import observation_features

    collect_dataset("jmsra", n_episodes=10, root=tmp_path)                 # 640 rounds
    dataset = load_dataset("jmsra_env/JMSRA-Box/jmsra-v0", root=tmp_path)
    consts = model.model_constants(dataset.recover_environment().unwrapped.config)
    X, Y = [], []
    for ep in dataset.iterate_episodes():
        obs = {k: v[:-1] for k, v in ep.observations.items()}            # what each action answered
        terms = model.terms_from_observation(consts, obs)
        X.append(observation_features(obs, consts, "physics"))
        Y.append(encode_deadline(ep.infos["media"][1:], ep.infos["bandwidth_hz"][1:], terms))
    X, Y = np.concatenate(X), np.concatenate(Y)
    W, *_ = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), Y, rcond=None)

    env = gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline",
                   jmsra_in_info=True)
    latency, jmsra = [], []
    features, _ = env.reset(seed=1000)                                     # held-out seeds
    for _ in range(128):
        action = np.clip(np.append(features, 1.0) @ W, -1.0, 1.0)
        features, reward, terminated, truncated, info = env.step(action)
        latency.append(-reward)
        jmsra.append(info["jmsra_latency_s"])
        if terminated or truncated:
            features, _ = env.reset()
    # measured: within ~1 % of JMSRA; the zero action (equal finish targets) is ~+90 %
    assert np.mean(latency) < 1.15 * np.mean(jmsra)
