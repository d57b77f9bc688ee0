"""Training on session scenarios: recipe defaults, BC from rolled episodes, session metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jmsra_env
from jmsra_agents import training as t
from jmsra_agents.bc import session_expert_dataset
from jmsra_agents.cli_train import build_parser, main, spec_from_args
from jmsra_agents.encoding import expert_policy_action
from jmsra_agents.features import feature_names, n_features, observation_features
from jmsra_env import actions, model
from jmsra_env.evaluation import scenario_from_env_id
from jmsra_env.policies import make_policy
from jmsra_env.registration import SESSION_ENV_IDS
from jmsra_env.session_env import JMSRASessionEnv, JMSRASessionVectorEnv

from test_train import TINY, _scalars

SESSION_ID = "jmsra_env/JMSRA-Session-v0"
FEW_ROUNDS = {"episode_rounds": 4}  # short episodes keep the runs tiny


def _spec(argv: list[str]) -> t.TrainSpec:
    parser = build_parser()
    return spec_from_args(parser.parse_args(argv), argv, parser)


@pytest.fixture(scope="module")
def session_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("sruns")
    rc = main(["--env-id", SESSION_ID, "--total-timesteps", "512", "--seed", "1", "--logdir", str(logdir),
               "--run-name", "sess", *TINY, "--bc-rounds", "32", "--bc-expert", "pool-aware",
               "--config", "episode_rounds=16", "--compare-episodes", "2"])
    assert rc == 0
    return logdir / "sess"


def test_session_training_logs_evictions_and_pool_usage_to_tensorboard(session_run):
    scalars = _scalars(session_run)
    for tag in ("rounds/evictions", "rounds/evictions_per_episode", "rounds/kv_pool_used_fraction"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert all(0.0 <= e.value <= 1.0 for e in scalars["rounds/kv_pool_used_fraction"])
    per_round = [e.value for e in scalars["rounds/evictions"]]
    per_episode = [e.value for e in scalars["rounds/evictions_per_episode"]]
    np.testing.assert_allclose(per_episode, [16 * v for v in per_round], rtol=1e-5)


def test_session_run_records_its_recipe(session_run):
    info = json.loads((session_run / "run.json").read_text())
    assert info["ppo"]["gamma"] == t.SESSION_GAMMA
    assert info["bc"]["expert"] == "pool-aware"
    assert info["action_encoding"] == "deadline"


def test_single_round_training_logs_no_session_metrics(tmp_path):
    assert main(["--total-timesteps", "256", "--logdir", str(tmp_path), "--run-name", "one", *TINY,
                 "--eval-freq", "0", "--checkpoint-freq", "0"]) == 0
    scalars = _scalars(tmp_path / "one")
    assert "rounds/latency_s" in scalars
    assert not {"rounds/evictions", "rounds/kv_pool_used_fraction"} & set(scalars)
    info = json.loads((tmp_path / "one" / "run.json").read_text())
    assert info["ppo"]["gamma"] == 0.0 and info["bc"]["expert"] == "jmsra"


@pytest.mark.parametrize("env_id", sorted(SESSION_ENV_IDS))
def test_gamma_defaults_to_the_session_discount_on_every_session_id(env_id):
    assert _spec(["--env-id", env_id]).ppo_config().gamma == t.SESSION_GAMMA


def test_gamma_defaults_to_zero_on_single_round_ids():
    assert _spec(["--env-id", "jmsra_env/JMSRA-Box-v1"]).ppo_config().gamma == 0.0
    assert _spec(["--env-id", "jmsra_env/JMSRA-v0", "--bc-steps", "0"]).ppo_config().gamma == 0.0


def test_a_given_gamma_wins_over_the_session_default():
    assert _spec(["--env-id", SESSION_ID, "--gamma", "0.5"]).ppo_config().gamma == 0.5
    assert _spec(["--env-id", SESSION_ID, "--gamma", "0"]).ppo_config().gamma == 0.0


def test_session_switched_on_by_config_gets_the_session_discount():
    spec = _spec(["--env-id", "jmsra_env/JMSRA-Box-v1", "--config", "session.enabled=true"])
    assert spec.ppo_config().gamma == t.SESSION_GAMMA


def test_api_spec_without_ppo_resolves_the_discount_per_scenario():
    assert t.TrainSpec(env_id=SESSION_ID).ppo_config().gamma == t.SESSION_GAMMA
    assert t.TrainSpec().ppo_config().gamma == 0.0


def test_bc_dataset_holds_what_the_expert_saw_and_decided_along_its_own_episodes():
    cfg, _ = scenario_from_env_id(SESSION_ID, FEW_ROUNDS)
    episodes, seed = 3, 11
    data = session_expert_dataset(cfg, episodes, seed, "physics", "deadline", expert="pool-aware", gamma=0.9)
    consts = model.model_constants(cfg)
    assert len(data) == episodes * cfg.episode_rounds
    # replay the episodes in a fresh batched session env with the same expert: every row matches
    env = JMSRASessionVectorEnv(episodes, config=cfg)
    expert = make_policy("pool-aware", config=cfg)
    obs, _ = env.reset(seed=seed)
    sent_kv = np.zeros((episodes, cfg.n_agents), dtype=bool)
    for step in range(cfg.episode_rounds):
        rows = slice(step * episodes, (step + 1) * episodes)
        # the observation is the one the expert's own earlier decisions created
        assert np.all((obs["kv_resident_tokens"] > 0) <= sent_kv)
        d = expert.decide(obs)
        media, bw = np.asarray(d.media), np.asarray(d.bandwidth_hz)
        np.testing.assert_array_equal(data.features[rows], observation_features(obs, consts, "physics"))
        want = expert_policy_action("deadline", media, bw, model.terms_from_observation(consts, obs))
        np.testing.assert_allclose(data.actions[rows], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(data.info["media"][rows], media)
        sent_kv |= media != model.NL
        obs, reward, *_ = env.step(actions.encode_dict(media, bw))
        np.testing.assert_allclose(data.latency_s[rows], -reward)
    assert sent_kv.any()  # the check above was not vacuous


def test_bc_dataset_value_targets_are_the_experts_discounted_returns():
    cfg, _ = scenario_from_env_id(SESSION_ID, FEW_ROUNDS)
    data = session_expert_dataset(cfg, 2, 5, "physics", "deadline", expert="jmsra", gamma=0.5)
    lat = data.latency_s.reshape(cfg.episode_rounds, 2)
    want = -(lat[0] + 0.5 * lat[1] + 0.25 * lat[2] + 0.125 * lat[3])
    np.testing.assert_allclose(data.returns.reshape(cfg.episode_rounds, 2)[0], want)


def test_bc_dataset_refuses_a_single_round_scenario():
    cfg, _ = scenario_from_env_id("jmsra_env/JMSRA-v0", {})
    with pytest.raises(ValueError, match="session"):
        session_expert_dataset(cfg, 1, 0, "physics")


def test_session_features_append_the_receiver_state_and_keep_the_single_round_layout():
    cfg, _ = scenario_from_env_id(SESSION_ID, {})
    env = JMSRASessionEnv(cfg)
    obs, _ = env.reset(seed=0)
    consts = model.model_constants(cfg)
    n = cfg.n_agents
    full = observation_features(obs, consts, "physics")
    assert full.shape == (n_features(n, "physics", session=True),) == (len(feature_names(n, session=True)),)
    np.testing.assert_array_equal(full[: n_features(n, "physics")], observation_features(obs, consts, session=False))
    assert np.all(np.isfinite(full))
    single_cfg = scenario_from_env_id("jmsra_env/JMSRA-v0", {})[0]
    single = jmsra_env.JMSRAEnv(single_cfg).reset(seed=0)[0]
    # the session block follows the scenario (its constants), not the observation's keys
    assert observation_features(single, model.model_constants(single_cfg)).shape == (n_features(n, "physics"),)


def test_an_unknown_bc_expert_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--env-id", SESSION_ID, "--bc-expert", "oracle-of-delphi", "--logdir", str(tmp_path), *TINY])
    assert exc.value.code == 2
    assert "--bc-expert" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_the_behaviour_cloning_set_size_defaults_per_scenario_in_the_python_api():
    from jmsra_agents import training as t

    assert t.TrainSpec(env_id="jmsra_env/JMSRA-Session-v0").bc_rounds == t.SESSION_BC_ROUNDS
    assert t.TrainSpec(env_id="jmsra_env/JMSRA-Box-v1").bc_rounds == t.DEFAULT_BC_ROUNDS
    assert t.TrainSpec(env_id="jmsra_env/JMSRA-Session-v0", bc_rounds=640).bc_rounds == 640


def test_the_sweeps_evaluation_of_a_session_model_is_evaluate_pys_score(session_run, tmp_path):
    """jmsra_agents.sweep.eval_step rolls a session model on whole episodes through the one evaluation
    path: its score equals evaluate.py's for the same episodes (same seed), episode by episode."""
    from jmsra_agents.cli_evaluate import main as evaluate_main
    from jmsra_agents.sweep import TrialCell, eval_step

    seed, episodes = 9100, 2
    cell = TrialCell(SESSION_ID, "ppo", 1, eval_episodes=episodes, eval_seed=seed)
    scored = eval_step(cell, session_run)
    out = tmp_path / "results"
    argv = ["--model", f"ppo={session_run}", "--env-id", SESSION_ID, "--episodes", str(episodes), "--seed", str(seed),
            "--policies", "none", "--no-plots", "--no-progress", "--out", str(out)]
    assert evaluate_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluation"].startswith("whole episodes")
    (row,) = [p for p in summary["policies"] if p["policy"] == "ppo"]
    assert scored["mean_latency_s"] == row["mean_latency_s"]
    assert row["episodes"] == episodes and row["rounds"] == episodes * summary["rounds_per_episode"]
    per_round = np.loadtxt(out / "rounds.csv", delimiter=",", skiprows=1, usecols=2).reshape(episodes, -1)
    np.testing.assert_allclose(scored["episode_latency_s"], per_round.mean(axis=1), rtol=1e-9)  # CSV digits
