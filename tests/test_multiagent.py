"""The multi-agent view: PettingZoo ParallelEnv, team policies, TorchRL wrapping and MAPPO runs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from jmsra_env import JMSRAEnv, make_config, model
from jmsra_env.multiagent import (
    CentralisedExpert,
    DecentralisedRule,
    JMSRAParallelEnv,
    central_to_joint_action,
    joint_to_central_action,
    make_team_policy,
    parallel_env,
)
from jmsra_env.solvers import solve

ROUNDS = 64  # one episode of the default scenario


def _joint(actions, agents):
    return np.stack([np.asarray(actions[a], dtype=np.float64) for a in agents])


# -- PettingZoo API ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["JMSRA-v0", "jmsra_env/JMSRA-N8-v0", "JMSRA-StaleCSI", "JMSRA-Session-v0",
                                      "jmsra_env/JMSRA-Session-TightPool-v0", "JMSRA-Session-N8"])
def test_parallel_api_test_passes(scenario):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(parallel_env(scenario), num_cycles=ROUNDS + 2)


@pytest.mark.parametrize("scenario", ["JMSRA-v0", "JMSRA-StaleCSI", "JMSRA-Session-v0", "JMSRA-Session-TightPool"])
def test_parallel_seed_test_passes(scenario):
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: parallel_env(scenario), num_cycles=ROUNDS)


def test_is_a_pettingzoo_parallel_env():
    from pettingzoo import ParallelEnv

    assert isinstance(parallel_env("JMSRA-v0"), ParallelEnv)


# -- Same rounds as the central env ----------------------------------------------------------------


def test_same_seed_gives_the_central_envs_rounds_and_rewards():
    ma, central = parallel_env("JMSRA-v0"), JMSRAEnv()
    obs, _ = ma.reset(seed=11)
    cobs, _ = central.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(ROUNDS):
        for k in cobs:
            np.testing.assert_array_equal(ma.central_observation[k], cobs[k])
        joint = rng.random((4, 2))
        joint[rng.random(4) < 0.2, 1] = 0.0  # some agents request nothing
        obs, rewards, _, _, _ = ma.step(dict(zip(ma.possible_agents, joint)))
        cobs, reward, _, truncated, _ = central.step(joint_to_central_action(joint))
        assert set(rewards.values()) == {reward}
    assert truncated and ma.agents == []


def test_central_action_mapped_to_joint_action_earns_the_same_reward():
    ma, central = parallel_env("JMSRA-v0"), JMSRAEnv()
    ma.reset(seed=5)
    central.reset(seed=5)
    central.action_space.seed(3)
    for _ in range(20):
        action = central.action_space.sample()
        joint = central_to_joint_action(action)
        _, rewards, _, _, _ = ma.step(dict(zip(ma.possible_agents, joint)))
        _, reward, _, _, _ = central.step(action)
        assert rewards["agent_0"] == reward


def test_all_zero_requests_split_the_band_equally():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    _, _, _, _, infos = ma.step({a: np.array([1.0, 0.0]) for a in ma.agents})
    b = [infos[a]["bandwidth_hz"] for a in ma.possible_agents]
    assert b == [ma.config.channel.bandwidth_hz / 4] * 4


def test_agent_observation_holds_its_own_entries_and_the_broadcast():
    ma = parallel_env("JMSRA-v0")
    obs, _ = ma.reset(seed=2)
    central = ma.central_observation
    for i, agent in enumerate(ma.possible_agents):
        assert obs[agent]["snr_db"].shape == (1,)
        assert obs[agent]["snr_db"][0] == central["snr_db"][i]
        assert obs[agent]["load"][0] == central["load"][i]
        np.testing.assert_array_equal(obs[agent]["receiver_load"], central["receiver_load"])
        assert obs[agent] in ma.observation_space(agent)


def test_agent_observation_gives_the_agents_own_model_terms():
    ma = parallel_env("JMSRA-v0")
    obs, _ = ma.reset(seed=4)
    own = model.terms_from_observation(ma.central_env.consts, obs["agent_2"])
    truth = ma.current_terms()
    np.testing.assert_allclose(own.payload_bits[0], truth.payload_bits[2], rtol=1e-12)
    np.testing.assert_allclose(own.prefill_s[0], truth.prefill_s[2], rtol=1e-12)


def test_state_is_the_flattened_central_observation():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=1)
    state = ma.state()
    expected = np.concatenate([ma.central_observation[k].ravel() for k in ma.state_keys])
    np.testing.assert_array_equal(state, expected)
    assert state in ma.state_space


def test_infos_carry_each_agents_latency_breakdown():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=3)
    _, rewards, _, _, infos = ma.step({a: np.array([0.0, 0.5]) for a in ma.agents})
    for agent in ma.possible_agents:
        info = infos[agent]
        assert info["latency_s"] == -rewards[agent]
        assert info["medium"] == 0
        assert info["finish_s"] == pytest.approx(info["compute_s"] + info["transmission_s"])
    assert sum(infos[a]["bandwidth_hz"] for a in ma.possible_agents) == pytest.approx(ma.config.channel.bandwidth_hz)


# -- Bad input --------------------------------------------------------------------------------------


def _actions(ma):
    return {a: np.array([0.0, 1.0], dtype=np.float32) for a in ma.possible_agents}


def test_missing_agent_action_is_a_value_error():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    actions = _actions(ma)
    del actions["agent_3"]
    with pytest.raises(ValueError, match="missing action.*agent_3"):
        ma.step(actions)


def test_unknown_agent_is_a_value_error():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    with pytest.raises(ValueError, match="unknown agent.*agent_9"):
        ma.step({**_actions(ma), "agent_9": np.zeros(2)})
    with pytest.raises(ValueError, match="unknown agent 'robot'"):
        ma.action_space("robot")


def test_negative_request_is_a_value_error_naming_the_agent():
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    with pytest.raises(ValueError, match="'agent_1'.*request must be non-negative"):
        ma.step({**_actions(ma), "agent_1": np.array([0.0, -0.1])})


@pytest.mark.parametrize(
    "bad, match",
    [([0.0, np.nan], "request must be finite"), ([1.5, 0.5], "medium score must be at most 1"), ([0.0], "shape")],
)
def test_malformed_agent_action_is_a_value_error(bad, match):
    ma = parallel_env("JMSRA-v0")
    ma.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        ma.step({**_actions(ma), "agent_0": np.array(bad)})


def test_step_after_the_episode_ended_asks_for_reset():
    ma = parallel_env("JMSRA-v0", episode_rounds=1)
    ma.reset(seed=0)
    ma.step(_actions(ma))
    with pytest.raises(RuntimeError, match="reset"):
        ma.step(_actions(ma))


def test_factory_reads_ids_variants_and_configs():
    assert parallel_env("jmsra_env/JMSRA-N8-Box-v1").n_agents == 8
    assert parallel_env("JMSRA-N16").n_agents == 16
    assert parallel_env(make_config(n_agents=3)).possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert parallel_env({"n_agents": 2}, csi_delay=1).config.csi_delay == 1
    with pytest.raises(ValueError, match="unknown scenario 'JMSRA-N5'"):
        parallel_env("JMSRA-N5")


def test_module_imports_and_steps_without_pettingzoo():
    code = (
        "import sys; sys.modules['pettingzoo'] = None\n"
        "from jmsra_env.multiagent import parallel_env\n"
        "env = parallel_env('JMSRA-v0'); obs, _ = env.reset(seed=0)\n"
        "_, r, *_ = env.step({a: [1.0, 1.0] for a in env.agents}); print(r['agent_0'] < 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


# -- Team policies ----------------------------------------------------------------------------------


def _rounds(cfg, n=256, seed=0):
    from jmsra_env.world import WorldProcess

    world = WorldProcess(cfg, n)
    world.reset(np.random.default_rng(seed))
    return world.observation(), world.true_terms()


def test_threshold_rule_is_the_threshold_equal_expert():
    cfg = make_config()
    obs, terms = _rounds(cfg)
    media, b = DecentralisedRule("threshold", cfg).decide(obs)
    expert = solve("threshold-equal", terms)
    np.testing.assert_array_equal(media, expert.media)
    np.testing.assert_allclose(model.latency(terms, media, b).latency_s, expert.latency_s, rtol=1e-12)


@pytest.mark.parametrize("name", ["threshold", "proportional"])
def test_decentralised_rule_reads_only_the_agents_own_observation(name):
    ma = parallel_env("JMSRA-v0")
    obs, _ = ma.reset(seed=6)
    rule = DecentralisedRule(name, ma.config)
    acts = rule.act(obs)
    np.testing.assert_allclose(_joint(acts, ma.possible_agents), rule.agent_actions(ma.central_observation), rtol=1e-6)
    changed = {**obs, "agent_0": {**obs["agent_0"], "snr_db": obs["agent_0"]["snr_db"] - 40.0}}
    again = rule.act(changed)
    for agent in ma.possible_agents[1:]:
        np.testing.assert_array_equal(again[agent], acts[agent])


def test_proportional_rule_beats_the_threshold_rule_on_average():
    cfg = make_config()
    obs, terms = _rounds(cfg, 1024)
    mean = {}
    for name in ("threshold", "proportional"):
        media, b = DecentralisedRule(name, cfg).decide(obs)
        mean[name] = model.latency(terms, media, b).latency_s.mean()
    assert mean["proportional"] < mean["threshold"]


def test_centralised_expert_acting_for_the_team_earns_its_latency():
    ma = parallel_env("JMSRA-v0")
    obs, _ = ma.reset(seed=8)
    team = CentralisedExpert("jmsra", ma.config)
    for _ in range(5):
        expected = solve("jmsra", ma.current_terms()).latency_s
        obs, rewards, *_ = ma.step(team.act(obs))
        assert -rewards["agent_0"] == pytest.approx(float(expected), rel=1e-6)


def test_team_policy_predict_returns_a_central_dict_action():
    cfg = make_config()
    central = JMSRAEnv(cfg)
    obs, _ = central.reset(seed=0)
    action, state = make_team_policy("proportional", cfg).predict(obs, deterministic=True)
    assert state is None and set(action) == {"media", "bandwidth"}
    central.step(action)
    with pytest.raises(ValueError, match="unknown team policy"):
        make_team_policy("telepathy", cfg)


# -- TorchRL ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["mappo", "ippo"])
def test_torchrl_check_env_specs_on_the_wrapped_env(algorithm):
    from torchrl.envs.utils import check_env_specs

    from jmsra_agents.marl import FeatureCodec, make_torchrl_env

    cfg = make_config()
    env = make_torchrl_env(cfg, FeatureCodec(cfg), algorithm, seed=0)
    check_env_specs(env)
    assert ("state" in env.observation_spec.keys()) == (algorithm == "mappo")


def test_torchrl_check_env_specs_on_the_raw_dict_env():
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import check_env_specs

    check_env_specs(PettingZooWrapper(parallel_env("JMSRA-v0"), return_state=True, seed=0))


def test_trained_policy_acts_on_its_own_features_only():
    import torch

    from jmsra_agents.marl import FeatureCodec, MARLPolicy, build_actor_net

    cfg = make_config()
    codec = FeatureCodec(cfg)
    torch.manual_seed(0)
    policy = MARLPolicy(build_actor_net(20, 4, 16, 1), codec)
    obs, _ = _rounds(cfg, 8)
    changed = {**obs, "snr_db": obs["snr_db"].copy()}
    changed["snr_db"][:, 0] -= 30.0
    a, b = policy.agent_actions(obs), policy.agent_actions(changed)
    np.testing.assert_array_equal(a[:, 1:], b[:, 1:])
    assert not np.array_equal(a[:, 0], b[:, 0])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from jmsra_agents.marl import MARLConfig, train

    run_dir = tmp_path_factory.mktemp("marl") / "mappo"
    hp = MARLConfig(
        total_frames=256, frames_per_batch=128, minibatch_size=64, n_epochs=1, hidden=16, depth=1,
        eval_rounds=64, eval_every=1, checkpoint_every=1, bc_steps=5, bc_rounds=256,
    )
    summary = train(make_config(), hp, run_dir, device="cpu")
    return run_dir, summary


def test_tiny_mappo_run_writes_tensorboard_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, summary = tiny_run
    assert summary["frames"] == 256
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    latencies = acc.Scalars("train/mean_latency_s")
    assert [e.step for e in latencies] == [128, 256]
    assert all(0 < e.value <= 60 for e in latencies)
    assert "eval/gap_to_jmsra_pct" in acc.Tags()["scalars"]


def test_tiny_mappo_checkpoint_loads_back_with_the_same_actions(tiny_run):
    from jmsra_agents.marl import load_marl_policy

    run_dir, summary = tiny_run
    policy = load_marl_policy(run_dir)
    meta = json.loads((run_dir / "marl.json").read_text())
    assert meta["frames"] == 256 and meta["algorithm"] == "mappo"
    obs, terms = _rounds(make_config(), 64, seed=1)
    action, _ = policy.predict(obs)
    assert set(action) == {"media", "bandwidth"} and action["media"].shape == (64, 4)
    ckpt = load_marl_policy(run_dir / "checkpoints" / "ckpt_256")
    np.testing.assert_array_equal(ckpt.predict(obs)[0]["bandwidth"], action["bandwidth"])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["ckpt_128", "ckpt_256"]


def test_load_marl_policy_rejects_a_directory_without_a_run(tmp_path):
    from jmsra_agents.marl import load_marl_policy

    with pytest.raises(ValueError, match="no marl.json"):
        load_marl_policy(tmp_path)


def test_tiny_ippo_run_trains(tmp_path):
    from jmsra_agents.marl import MARLConfig, train

    hp = MARLConfig(algorithm="ippo", total_frames=128, frames_per_batch=128, minibatch_size=64, n_epochs=1,
                    hidden=16, depth=1, eval_rounds=32, checkpoint_every=0)
    summary = train(make_config(), hp, tmp_path / "ippo", device="cpu")
    assert summary["algorithm"] == "ippo" and summary["eval_latency_s"] > 0
    assert (tmp_path / "ippo" / "actor.safetensors").is_file()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--total-frames", "0"], "total_frames must be an integer >= 1"),
        (["--algorithm", "qmix"], "algorithm must be one of"),
        (["--config", "n_agentz=3"], "n_agentz"),
        (["--scenario", "JMSRA-N5"], "unknown scenario"),
    ],
)
def test_cli_rejects_bad_flags_with_exit_2(argv, match, capsys, tmp_path):
    from jmsra_agents.marl import main

    assert main([*argv, "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jmsra-train-marl: error:") and match in err
    assert not any(tmp_path.iterdir())


# -- evaluate.py ---------------------------------------------------------------------------------------


def _summary_rows(out_dir):
    import csv

    with open(out_dir / "summary.csv", newline="") as f:
        return {row["policy"]: row for row in csv.DictReader(f)}


def test_evaluate_cli_scores_a_marl_run_next_to_experts_and_yardsticks(tiny_run, tmp_path, capsys):
    from jmsra_agents.cli_evaluate import main
    from jmsra_agents.marl import load_marl_policy
    from jmsra_env import evaluation as ev

    run_dir, _ = tiny_run
    out = tmp_path / "results"
    argv = ["--model", str(run_dir), "--policies", "jmsra,threshold-equal,threshold-local,proportional-local",
            "--episodes", "2", "--no-plots", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    rows = _summary_rows(out)
    assert set(rows) == {"jmsra", "threshold-equal", "threshold-local", "proportional-local", "mappo:mappo"}
    assert rows["mappo:mappo"]["kind"] == "marl" and rows["proportional-local"]["kind"] == "decentralised"
    assert rows["threshold-local"]["mean_latency_s"] == rows["threshold-equal"]["mean_latency_s"]
    # the table's figure is the policy charged on the evaluation's rounds
    rounds = ev.draw_rounds(make_config(), 2, ev.DEFAULT_SEED)
    media, b = load_marl_policy(run_dir).decide(rounds.obs)
    expected = ev.charge(rounds.terms, media, b).latency_s.mean()
    assert float(rows["mappo:mappo"]["mean_latency_s"]) == pytest.approx(expected, rel=1e-9)


def test_evaluate_cli_names_a_broken_marl_run(tmp_path, capsys):
    from jmsra_agents.cli_evaluate import main

    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "marl.json").write_text("{not json")
    assert main(["--model", str(bad), "--no-plots", "--no-progress", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot load multi-agent run" in err and str(bad) in err
