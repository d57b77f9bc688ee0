"""train.py and agents/: smoke training, TensorBoard scalars, checkpoints, resume, loading, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env
from jmsra_agents import checkpoint as ck
from jmsra_agents.encoding import decode_deadline, encode_deadline
from jmsra_agents.features import n_features, observation_features
from jmsra_env import actions, model
from jmsra_env.solvers import solve
from jmsra_env.world import WorldProcess
from jmsra_agents.cli_train import main

# A tiny but complete run: 2 envs x 128 steps per rollout, small nets, a little BC.
TINY = [
    "--n-envs", "2", "--n-steps", "128", "--batch-size", "128", "--n-epochs", "2", "--net-arch", "32,32",
    "--bc-steps", "20", "--bc-rounds", "2000", "--eval-freq", "256", "--eval-episodes", "2",
    "--checkpoint-freq", "256", "--compare-episodes", "0", "--no-progress-bar", "--device", "cpu",
]


def _scalars(run_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list] = {}
    for events in sorted((run_dir / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(acc.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    rc = main(["--total-timesteps", "512", "--seed", "3", "--logdir", str(logdir), "--run-name", "smoke", *TINY])
    assert rc == 0
    return logdir / "smoke"


def test_smoke_training_logs_latency_and_gap_to_tensorboard(trained_run):
    scalars = _scalars(trained_run)
    for tag in ("rounds/latency_s", "rounds/gap_to_jmsra_pct", "rounds/kv_share", "rounds/capped_rate",
                "eval/latency_s", "eval/gap_to_jmsra_pct", "train/value_loss", "train/policy_gradient_loss"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    lat = [e.value for e in scalars["rounds/latency_s"]]
    ref = [e.value for e in scalars["rounds/jmsra_latency_s"]]
    gap = [e.value for e in scalars["rounds/gap_to_jmsra_pct"]]
    assert all(0.0 < v <= 60.0 for v in lat + ref)
    np.testing.assert_allclose(gap, [100.0 * (a / b - 1.0) for a, b in zip(lat, ref)], rtol=1e-4, atol=1e-3)
    assert all(0.0 <= e.value <= 1.0 for e in scalars["rounds/kv_share"])


def test_run_directory_holds_the_agreed_files(trained_run):
    unit = ["model.zip", "policy.json", "policy.safetensors", "vecnormalize.pkl"]
    for name in (*unit, "run.json", *(f"best_{n}" for n in unit), ".jmsra_run.lock"):
        assert (trained_run / name).is_file(), name
    for steps in (256, 512):
        d = trained_run / "checkpoints" / f"ckpt_{steps}_steps"
        assert sorted(p.name for p in d.iterdir()) == sorted([*unit, "run.json"])
    info = json.loads((trained_run / "run.json").read_text())
    assert info["format"] == ck.RUN_FORMAT and info["kind"] == "final"
    assert info["env_id"] == "jmsra_env/JMSRA-Box-v1" and info["action_form"] == "box"
    assert info["num_timesteps"] == 512 and info["n_agents"] == 4
    assert jmsra_env.make_config(info["config"]) == jmsra_env.make_config()
    assert {"torch", "stable_baselines3", "gymnasium", "numpy"} <= set(info["versions"])
    assert not [p for p in trained_run.rglob("*") if p.name.endswith(".tmp")]


def test_saved_model_loads_and_predicts_on_raw_observations(trained_run):
    for path in (trained_run, trained_run / "best_model.zip", trained_run / "checkpoints" / "ckpt_256_steps"):
        policy = ck.load_trained_policy(path)
        assert policy.env_id == "jmsra_env/JMSRA-Box-v1" and policy.action_form == "box"
        assert policy.config == jmsra_env.make_config()
        env = gym.make(policy.env_id)
        obs, _ = env.reset(seed=1)
        action, state = policy.predict(obs, deterministic=True)
        assert state is None and action.shape == (8,) and np.all(np.abs(action) <= 1.0)
        _, reward, *_ = env.step(action)
        assert -60.0 <= reward < 0.0
        batch = {k: np.stack([v, v, v]) for k, v in obs.items()}
        np.testing.assert_allclose(policy.predict(batch)[0], np.stack([action] * 3), rtol=1e-6)
    assert ck.load_trained_policy(trained_run / "checkpoints" / "ckpt_256_steps").num_timesteps == 256


def test_resume_from_checkpoint_continues_the_timestep_count(trained_run, capsys):
    rc = main(["--resume", str(trained_run / "checkpoints" / "ckpt_256_steps"), "--total-timesteps", "1024",
               "--no-progress-bar", "--compare-episodes", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1,024 steps (768 in this session" in out
    info = json.loads((trained_run / "run.json").read_text())
    assert info["num_timesteps"] == 1024
    assert (trained_run / "checkpoints" / "ckpt_768_steps").is_dir()
    assert ck.load_trained_policy(trained_run).num_timesteps == 1024
    steps = [e.step for e in _scalars(trained_run)["rounds/latency_s"]]
    assert max(steps) == 1024
    curve = json.loads((trained_run / "evaluations.json").read_text())["evaluations"]
    assert [r["timesteps"] for r in curve] == [0, 256, 512, 768, 1024]  # 0: right after BC


def test_same_seed_gives_identical_first_update_losses(tmp_path):
    def first_losses(seed: int, name: str) -> dict[str, float]:
        args = ["--total-timesteps", "512", "--seed", str(seed), "--logdir", str(tmp_path), "--run-name", name,
                *TINY, "--eval-freq", "0", "--checkpoint-freq", "0"]
        assert main(args) == 0
        s = _scalars(tmp_path / name)
        return {t: s[t][0].value for t in ("train/value_loss", "train/policy_gradient_loss", "train/loss")}

    a, b, c = first_losses(5, "a"), first_losses(5, "b"), first_losses(6, "c")
    assert a == b
    assert a != c


def test_ctrl_c_saves_the_model_before_exiting(tmp_path, monkeypatch, capsys):
    from jmsra_agents.callbacks import RoundMetricsCallback

    calls = {"n": 0}
    original = RoundMetricsCallback._on_rollout_end

    def interrupt_on_second_rollout(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RoundMetricsCallback, "_on_rollout_end", interrupt_on_second_rollout)
    args = ["--total-timesteps", "5000", "--logdir", str(tmp_path), "--run-name", "cc", *TINY]
    assert main(args) == 130
    info = json.loads((tmp_path / "cc" / "run.json").read_text())
    assert info["kind"] == "interrupted" and info["num_timesteps"] == 512
    assert ck.load_trained_policy(tmp_path / "cc").num_timesteps == 512
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--env-id", "jmsra_env/NoSuchEnv-v0"], "unknown environment id"),
        (["--total-timesteps", "0"], "--total-timesteps must be a positive integer"),
        (["--total-timesteps", "-5"], "--total-timesteps must be a positive integer"),
        (["--config", "no_such_key=1"], "unknown config key"),
        (["--resume", "/nonexistent/run"], "does not exist"),
        (["--run-name", "..", "--force"], "plain directory name"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, extra, message):
    logdir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(logdir), "--run-name", "x", *TINY, *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not logdir.exists()


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(tmp_path / "runs"), "--run-name", "x", *TINY, "--device", "cuda"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_existing_run_dir_without_force_is_an_error_and_untouched(tmp_path, capsys):
    run = tmp_path / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "model.zip").write_bytes(b"precious")
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(tmp_path / "runs"), "--run-name", "taken", *TINY])
    assert exc.value.code == 2
    assert "already exists" in capsys.readouterr().err and "--force" in capsys.readouterr().err + "--force"
    assert [p.name for p in run.iterdir()] == ["model.zip"]
    assert (run / "model.zip").read_bytes() == b"precious"


def test_load_trained_policy_names_a_missing_or_corrupt_path(tmp_path, trained_run):
    with pytest.raises(FileNotFoundError, match="nope"):
        ck.load_trained_policy(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("vecnormalize.pkl", "run.json"):
        (bad / name).write_bytes((trained_run / name).read_bytes())
    (bad / "model.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=str(bad / "model.zip")):
        ck.load_trained_policy(bad, trust_pickle=True)
    (bad / "run.json").write_text("{")
    with pytest.raises(ValueError, match="run.json"):
        ck.load_trained_policy(bad, trust_pickle=True)


def test_safe_loader_names_a_corrupt_policy_file(tmp_path, trained_run):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("policy.json", "policy.safetensors"):
        (bad / name).write_bytes((trained_run / name).read_bytes())
    (bad / "policy.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ck.TornModelError, match="policy.safetensors"):
        ck.load_trained_policy(bad)
    (bad / "policy.json").write_text("{")
    with pytest.raises(ValueError, match="policy.json"):
        ck.load_trained_policy(bad)


def _expert_rounds(n_rounds: int = 512):
    cfg = jmsra_env.make_config()
    consts = model.model_constants(cfg)
    world = WorldProcess(cfg, n_rounds)
    world.reset(np.random.default_rng(0))
    obs = world.observation()
    terms = model.terms_from_observation(consts, obs)
    return consts, obs, terms, solve("jmsra", terms)


def test_deadline_encoding_of_an_expert_decision_keeps_its_latency():
    consts, obs, terms, d = _expert_rounds()
    code = encode_deadline(d.media, d.bandwidth_hz, terms)
    assert code.shape == (512, 8) and np.all(np.abs(code) <= 1.0)
    media, bw = actions.decode_box(decode_deadline(code, obs, consts), terms)
    np.testing.assert_array_equal(media, d.media)
    lat = model.latency(terms, media, bw).latency_s
    np.testing.assert_allclose(lat, d.latency_s, rtol=5e-3)
    assert abs(lat.mean() / d.latency_s.mean() - 1.0) < 5e-4


def test_features_are_finite_and_batch_consistent():
    consts, obs, _, _ = _expert_rounds(64)
    for kind in ("log", "physics"):
        f = observation_features(obs, consts, kind)
        assert f.shape == (64, n_features(4, kind)) and f.dtype == np.float32 and np.all(np.isfinite(f))
        one = observation_features({k: v[7] for k, v in obs.items()}, consts, kind)
        np.testing.assert_array_equal(one, f[7])


def test_native_vec_env_trains_and_logs_the_same_metrics(tmp_path):
    args = ["--vec", "native", "--total-timesteps", "512", "--logdir", str(tmp_path), "--run-name", "nat", *TINY,
            "--eval-freq", "0", "--checkpoint-freq", "0"]
    assert main(args) == 0
    scalars = _scalars(tmp_path / "nat")
    assert {"rounds/latency_s", "rounds/gap_to_jmsra_pct", "train/value_loss"} <= set(scalars)
    assert json.loads((tmp_path / "nat" / "run.json").read_text())["args"]["vec"] == "native"


def test_zoo_hyperparameters_cover_every_sb3_ready_id_and_name_importable_wrappers():
    import importlib
    import re

    from jmsra_env.registration import ENV_IDS

    text = (Path(__file__).resolve().parents[1] / "hyperparams" / "ppo.yml").read_text()
    keys = set(re.findall(r"^([^\s#][^:]*):", text, flags=re.M)) - {"default"}
    assert keys == {i for i in ENV_IDS if "-Box-" in i}
    env = gym.make("jmsra_env/JMSRA-Box-v1")
    for path in re.findall(r"^\s+- ((?:jmsra_agents|jmsra_env)\.\S+)$", text, flags=re.M):  # innermost first, as the Zoo does
        module, _, name = path.rpartition(".")
        env = getattr(importlib.import_module(module), name)(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (n_features(4),)
    _, reward, *_ = env.step(env.action_space.sample())
    assert -60.0 <= reward < 0.0


def test_evaluation_charges_the_policy_what_the_environment_charges(trained_run):
    from jmsra_agents.evaluation import TrainedModelPolicy, compare_with_experts
    from jmsra_env.evaluation import rollout_episodes

    trained = ck.load_trained_policy(trained_run)
    policy = TrainedModelPolicy(trained, trained.config)
    overrides = {"episode_rounds": 8}
    res = compare_with_experts("jmsra_env/JMSRA-Box-v1", overrides, [policy], experts=("jmsra", "nl-only"),
                               episodes=2, seed=7)
    stepped = rollout_episodes("jmsra_env/JMSRA-Box-v1", policy, 2, 7, overrides=overrides)
    # float32 network: a batch of 2 (the rollout) and of 16 rounds round differently (~1e-7)
    np.testing.assert_allclose(stepped.latency_s, res.results[0].latency_s, rtol=1e-5)
    assert res.rounds.n_rounds == 16 and res.row("jmsra")["gap_pct"] == 0.0
    assert res.mean("jmsra") <= res.mean("nl-only")
