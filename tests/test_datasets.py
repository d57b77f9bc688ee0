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


# -- issue 19: IDs checked before the disk, atomic collection, counts, recorded seeds ------------


@pytest.mark.parametrize("bad", [
    "foo", "../escape-v0", "jmsra_env/../../escape-v0", "/abs/path-v0", "a//b-v0", "a/./b-v0", "ns/.hidden-v0",
    "name-v", "name-vx", "ns/name-v0/", "x" * 300 + "-v0", "name-v1234567", "", 3, 2.5, b"name-v0",
])
def test_a_bad_dataset_id_is_refused_before_anything_touches_the_disk(tmp_path, bad):
    from jmsra_env.datasets import check_dataset_id

    root = tmp_path / "root"
    with pytest.raises(ValueError, match="dataset_id"):
        collect_dataset("nl-only", n_episodes=1, config=CONFIG, root=root, dataset_id=bad)
    with pytest.raises(ValueError, match="dataset_id"):
        check_dataset_id(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the root
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="dataset_id"):
            load_dataset(bad, root=root)


@pytest.mark.parametrize("field, value", [
    ("n_episodes", True), ("n_episodes", 0), ("n_episodes", 1.0), ("n_episodes", 10**9), ("n_episodes", "2"),
    ("seed", True), ("seed", -1), ("seed", 1.5), ("seed", 2**64),
])
def test_bools_and_bad_counts_are_refused_by_name(tmp_path, field, value):
    kw = {"n_episodes": 1, field: value}
    with pytest.raises(ValueError, match=field):
        collect_dataset("nl-only", config=CONFIG, root=tmp_path / "root", **kw)
    assert not (tmp_path / "root").exists()


def test_a_collection_killed_while_writing_leaves_no_dataset_and_the_id_stays_free(tmp_path, monkeypatch):
    import minari

    real = minari.create_dataset_from_buffers

    def killed(dataset_id, buffers, **kw):
        real(dataset_id, buffers[:1], **kw)  # part of it written, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", killed)
    with pytest.raises(KeyboardInterrupt):
        collect_dataset("nl-only", n_episodes=2, config=CONFIG, root=tmp_path)
    monkeypatch.setattr(minari, "create_dataset_from_buffers", real)
    assert not (tmp_path / "jmsra_env" / "JMSRA-Box" / "nl-only-v0").exists()
    assert not list(tmp_path.glob(".jmsra_collect.*"))
    with pytest.raises(FileNotFoundError, match="no dataset"):
        load_dataset("jmsra_env/JMSRA-Box/nl-only-v0", root=tmp_path)
    ds = collect_dataset("nl-only", n_episodes=2, config=CONFIG, root=tmp_path)  # the ID is free
    assert ds.total_episodes == 2


def test_temporary_folders_of_killed_collections_are_removed_by_the_next_one(tmp_path):
    dead = tmp_path / ".jmsra_collect.999999999.abc"
    (dead / "jmsra_env").mkdir(parents=True)
    live = tmp_path / f".jmsra_collect.{os.getppid()}.xyz"
    live.mkdir()
    collect_dataset("kv-only", n_episodes=1, config=CONFIG, root=tmp_path)
    assert not dead.exists() and live.exists()


def test_an_empty_dataset_is_an_error_not_zero_episodes(tmp_path):
    collect_dataset("kv-only", n_episodes=1, config=CONFIG, root=tmp_path)
    data = tmp_path / "jmsra_env" / "JMSRA-Box" / "kv-only-v0" / "data"
    import json

    meta = json.loads((data / "metadata.json").read_text())
    meta["total_episodes"] = 0
    (data / "metadata.json").write_text(json.dumps(meta))
    for p in data.iterdir():
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
    with pytest.raises(ValueError, match="holds no episodes"):
        load_dataset("jmsra_env/JMSRA-Box/kv-only-v0", root=tmp_path)


def test_each_episode_records_the_seed_that_replays_it(tmp_path):
    # The replay snippet of docs/libraries.md, verbatim.
    from jmsra_env.datasets import episode_seeds

    collect_dataset("jmsra", n_episodes=3, seed=40, config=CONFIG, root=tmp_path)
    dataset = load_dataset("jmsra_env/JMSRA-Box/jmsra-v0", root=tmp_path)
    env = dataset.recover_environment()
    for seed, ep in zip(episode_seeds(dataset), dataset.iterate_episodes()):
        obs, _ = env.reset(seed=seed)
        for t, action in enumerate(ep.infos["action_float64"][1:]):
            obs, reward, *_ = env.step(action)
            assert reward == ep.rewards[t]                                # bit for bit
    assert episode_seeds(dataset) == [40, 41, 42]
    doc = (__import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "libraries.md").read_text()
    assert "for seed, ep in zip(episode_seeds(dataset), dataset.iterate_episodes()):" in doc
