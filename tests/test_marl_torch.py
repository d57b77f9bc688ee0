"""train.py --algorithm mappo|ippo (jmsra_agents.torch_marl): the multi-agent trainer on the torch
backend's stack. Learning, resume, the safe format through evaluate.py, decentralised actors,
determinism, and bad input. Tiny runs on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import jmsra_env  # noqa: F401 - registers the environments
from jmsra_agents import checkpoint as ck
from jmsra_agents.cli_train import main
from jmsra_agents.training import TrainSpec, TrainSpecError, _validate, default_ppo, resume_spec, torch_context, train

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete MAPPO run: 64 teams x 4 steps per rollout (256 rounds, 1,024 agent samples per update).
TINY = [
    "--algorithm", "mappo", "--n-envs", "64", "--n-steps", "4", "--batch-size", "256", "--n-epochs", "2",
    "--net-arch", "16,16", "--bc-steps", "0", "--eval-freq", "512", "--eval-episodes", "2",
    "--checkpoint-freq", "512", "--compare-episodes", "0", "--no-progress-bar", "--device", "cpu",
]


def _spec(tmp_path, name, **kw):
    base = dict(backend="torch", algorithm="mappo", n_envs=64, total_timesteps=1024, bc_steps=0, eval_freq=0,
                eval_episodes=2, compare_episodes=0, checkpoint_freq=512, logdir=str(tmp_path), run_name=name,
                progress_bar=False,
                ppo=default_ppo(0, backend="torch", n_steps=4, batch_size=256, n_epochs=2, net_arch=(16, 16)))
    return TrainSpec(**{**base, **kw})


def _weights(path):
    from safetensors.torch import load

    return load(path.read_bytes())


@pytest.fixture(scope="module")
def mappo_result(tmp_path_factory):
    """Cloning JMSRA's per-agent decisions, then MAPPO; evaluation, best model, checkpoints, comparison."""
    logdir = tmp_path_factory.mktemp("runs")
    return train(_spec(logdir, "mappo", seed=3, bc_steps=20, bc_rounds=512, eval_freq=512, compare_episodes=2),
                 log=None)


def test_team_run_writes_the_torch_backends_pickle_free_units(mappo_result):
    run = mappo_result.run_dir
    unit = ["policy.json", "policy.safetensors", "trainer.safetensors"]
    for name in (*unit, "run.json", *(f"best_{n}" for n in unit), ".jmsra_run.lock", "evaluations.json"):
        assert (run / name).is_file(), name
    assert not list(run.rglob("*.zip")) and not list(run.rglob("*.pkl")) and not (run / "marl.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_1024_steps", "ckpt_512_steps"]
    info = json.loads((run / "run.json").read_text())
    assert (info["backend"], info["algorithm"], info["action_form"]) == ("torch", "mappo", "team")
    assert info["args"]["algorithm"] == "mappo" and info["bc"]["rounds"] == 512
    policy = json.loads((run / "policy.json").read_text())
    assert policy["architecture"]["obs_dim"] == 20 and policy["architecture"]["action_dim"] == 2  # one agent's
    assert "value_norm.mean" in _weights(run / "trainer.safetensors")  # MAPPO's critic statistics


def test_saved_team_policy_evaluates_identically_through_evaluate_py(mappo_result, tmp_path):
    """The trainer's held-out figure equals evaluate.py --model's from the safe files, to the last bit."""
    from jmsra_agents.cli_evaluate import main as evaluate

    out = tmp_path / "ev"
    assert evaluate(["--model", f"mappo={mappo_result.run_dir}", "--episodes", "2", "--policies", "jmsra", "--out",
                     str(out), "--no-plots", "--no-progress"]) == 0
    rows = {r["policy"]: r for r in json.loads((out / "summary.json").read_text())["policies"]}
    assert rows["mappo"]["mean_latency_s"] == mappo_result.metrics["compare/mappo_latency_s"]
    assert "compare/ppo_latency_s" not in mappo_result.metrics  # labelled with its algorithm
    assert rows["jmsra"]["mean_latency_s"] == mappo_result.metrics["compare/jmsra_latency_s"]


def test_team_actor_decides_for_each_agent_from_its_own_observation(mappo_result):
    """Agent 0's channel changes: only agent 0's medium and finish-time code may change."""
    from jmsra_env import evaluation as ev

    policy = ck.load_trained_policy(mappo_result.run_dir)
    obs = ev.draw_rounds(policy.config, 1, 0).obs
    changed = {**obs, "snr_db": obs["snr_db"].copy()}
    changed["snr_db"][:, 0] -= 30.0

    def codes(o):
        x = policy.normalized_features(o)
        return policy.model.predict(x.reshape(-1, x.shape[-1]))[0].reshape(*x.shape[:-1], 2)

    a, b = codes(obs), codes(changed)
    np.testing.assert_array_equal(a[:, 1:], b[:, 1:])
    assert not np.array_equal(a[:, 0], b[:, 0])


def test_team_env_deadline_step_charges_what_the_central_deadline_env_charges():
    from jmsra_agents.envs import scenario_config
    from jmsra_agents.torch_ppo import make_torch_vec_env
    from jmsra_env.core.multiagent import TorchTeamEnv, split_agent_features

    cfg = scenario_config("jmsra_env/JMSRA-Box-v1")
    team = TorchTeamEnv("jmsra_env/JMSRA-Box-v1", 16, device="cpu", action_encoding="deadline", config=cfg)
    central = make_torch_vec_env("jmsra_env/JMSRA-Box-v1", 16, cfg, device="cpu", features="physics",
                                 action_encoding="deadline")
    obs, state = team.reset(seed=4)
    c_obs, _ = central.reset(seed=4)
    assert torch.equal(state, c_obs)
    np.testing.assert_array_equal(split_agent_features(state.numpy(), 4, "physics", False), obs.numpy())
    a = torch.rand((16, 4, 2), generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, _, reward, _, info = team.step(a)
    _, c_reward, _, _, c_info = central.step(torch.cat([a[..., 0], a[..., 1]], dim=1))
    assert torch.equal(reward[:, 0], c_reward) and torch.equal(reward[:, 3], c_reward)
    assert torch.equal(info["bandwidth_hz"], c_info["bandwidth_hz"])


def test_resume_continues_the_step_count_weights_optimiser_and_statistics_exactly(tmp_path):
    from jmsra_agents.torch_marl import TeamRun

    first = train(_spec(tmp_path, "res", total_timesteps=768), log=None)
    saved_w = _weights(first.run_dir / "policy.safetensors")
    saved_t = _weights(first.run_dir / "trainer.safetensors")
    spec = resume_spec(str(first.run_dir), total_timesteps=1536)
    assert spec.algorithm == "mappo"
    run = TeamRun(_validate(spec), first.run_dir, lambda m: None, {"signal": None}, torch_context())
    run._build()
    assert run.num_timesteps == 768
    for k, v in run.ac.state_dict().items():
        assert torch.equal(v.cpu(), saved_w[k]), k
    assert torch.equal(run.gen.get_state(), saved_t["generator_state"])
    assert torch.equal(run.value_norm.mean.cpu(), saved_t["value_norm.mean"])
    for k, v in saved_t.items():
        if k.startswith("adam."):
            name, key = k[len("adam."):].rsplit(".", 1)
            assert torch.equal(run.opt.state[dict(run.ac.named_parameters())[name]][key].cpu(), v), k
    run.writer.close()
    run.env.close()
    more = train(spec, log=None)
    assert more.num_timesteps == 1536 and more.steps_this_session == 768
    assert json.loads((first.run_dir / "run.json").read_text())["algorithm"] == "mappo"


def test_sigkill_then_resume_finishes_from_the_newest_checkpoint(tmp_path):
    args = ["--total-timesteps", "200000", "--logdir", str(tmp_path), "--run-name", "k", *TINY, "--eval-freq", "0",
            "--checkpoint-freq", "256"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "k" / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len([p for p in ckpts.glob("ckpt_*")] if ckpts.is_dir() else []) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = max(int(p.name.split("_")[1]) for p in ckpts.glob("ckpt_*"))
    assert newest >= 512
    assert main(["--resume", str(tmp_path / "k"), "--total-timesteps", str(newest + 512), "--no-progress-bar"]) == 0
    assert ck.load_trained_policy(tmp_path / "k").num_timesteps == newest + 512
    assert json.loads((tmp_path / "k" / "run.json").read_text())["algorithm"] == "mappo"


def test_ctrl_c_saves_the_team_and_resume_continues(tmp_path, capsys, interrupt_second_torch_update):
    assert main(["--total-timesteps", "4096", "--logdir", str(tmp_path), "--run-name", "cc", *TINY]) == 130
    info = json.loads((tmp_path / "cc" / "run.json").read_text())
    assert (info["kind"], info["num_timesteps"], info["algorithm"]) == ("interrupted", 256, "mappo")
    assert "--resume" in capsys.readouterr().out
    interrupt_second_torch_update()  # the real update again
    assert main(["--resume", str(tmp_path / "cc"), "--total-timesteps", "768", "--no-progress-bar"]) == 0
    assert ck.load_trained_policy(tmp_path / "cc").num_timesteps == 768


@pytest.mark.parametrize("algorithm", ["mappo", "ippo"])
def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, algorithm):
    runs = [train(_spec(tmp_path, f"{algorithm}{i}", algorithm=algorithm, seed=seed, total_timesteps=512,
                        checkpoint_freq=0), log=None) for i, seed in enumerate((5, 5, 6))]
    a, b, c = (_weights(r.run_dir / "policy.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_learning_moves_the_gap_to_jmsra_down_on_a_tiny_budget(tmp_path):
    """Pure MAPPO from a random network on JMSRA-v0: the deterministic team's gap to JMSRA on the
    evaluation seeds falls by a third within 32,768 rounds."""
    spec = _spec(tmp_path, "learn", n_envs=512, total_timesteps=32_768, eval_freq=32_768, eval_episodes=4,
                 checkpoint_freq=0, seed=0,
                 ppo=default_ppo(0, backend="torch", n_steps=8, batch_size=4096, n_epochs=4, net_arch=(64, 64),
                                 learning_rate=3e-3))
    result = train(spec, log=None)
    curve = json.loads((result.run_dir / "evaluations.json").read_text())["evaluations"]
    assert [r["timesteps"] for r in curve] == [0, 32_768]
    start, end = curve[0]["gap_to_jmsra_pct"], curve[-1]["gap_to_jmsra_pct"]
    assert end < 2.0 / 3.0 * start, curve


def test_ippo_on_a_session_clones_and_trains(tmp_path):
    result = train(_spec(tmp_path, "ses", algorithm="ippo", env_id="jmsra_env/JMSRA-Session-v0", bc_steps=5,
                         bc_rounds=128, bc_expert="pool-aware", total_timesteps=256, checkpoint_freq=0), log=None)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["algorithm"] == "ippo" and info["num_timesteps"] == 256
    assert ck.load_trained_policy(result.run_dir).num_timesteps == 256
    assert json.loads((result.run_dir / "policy.json").read_text())["architecture"]["obs_dim"] == 27  # + the session's


# -- bad input: refused before anything is created, naming the flag ------------------------------------


def _refused(capsys, argv, message, logdir):
    before = sorted(str(p) + str(p.stat().st_mtime_ns) for p in logdir.rglob("*")) if logdir.exists() else None
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    after = sorted(str(p) + str(p.stat().st_mtime_ns) for p in logdir.rglob("*")) if logdir.exists() else None
    assert after == before


@pytest.mark.parametrize("argv, message", [
    ([*TINY, "--backend", "sb3"], "--algorithm mappo runs on the torch backend only"),
    ([*TINY, "--action-encoding", "box"], "--action-encoding 'box' cannot be split per agent"),
    ([*TINY, "--dagger-rounds", "1"], "--dagger-rounds applies to --algorithm ppo only"),
    ([*TINY[2:], "--algorithm", "qmix"], "--algorithm"),
])
def test_a_bad_multi_agent_flag_is_refused(tmp_path, capsys, argv, message):
    logdir = tmp_path / "runs"
    _refused(capsys, ["--logdir", str(logdir), "--run-name", "x", *argv], message, logdir)
    assert not logdir.exists()


def test_a_run_resumed_with_another_algorithm_is_refused_and_untouched(mappo_result, tmp_path, capsys):
    run = mappo_result.run_dir
    _refused(capsys, ["--resume", str(run), "--algorithm", "ippo", "--total-timesteps", "4096"],
             "--algorithm 'ippo' (run: 'mappo')", run)
    _refused(capsys, ["--resume", str(run), "--backend", "sb3", "--total-timesteps", "4096"],
             "--backend 'sb3' (run: 'torch')", run)
    ppo = train(_spec(tmp_path, "ppo", algorithm="ppo", total_timesteps=256, checkpoint_freq=0), log=None).run_dir
    _refused(capsys, ["--resume", str(ppo), "--algorithm", "mappo", "--total-timesteps", "4096"],
             "--algorithm 'mappo' (run: 'ppo')", ppo)
    with pytest.raises(TrainSpecError, match="--algorithm"):
        resume_spec(str(ppo), algorithm="ippo")


# -- jmsra-train-marl: the same trainer, its flags translated; --reference: the TorchRL trainer ----------


def test_jmsra_train_marl_trains_and_resumes_on_the_torch_backend(tmp_path):
    from jmsra_agents.marl import main as marl_main

    tiny = ["--algorithm", "ippo", "--logdir", str(tmp_path), "--frames-per-batch", "1024", "--minibatch-size", "64",
            "--n-epochs", "1", "--hidden", "16", "--depth", "1", "--bc-steps", "5", "--bc-rounds", "256",
            "--eval-every", "1", "--checkpoint-every", "1", "--device", "cpu"]
    assert marl_main([*tiny, "--total-frames", "1024"]) == 0
    run = tmp_path / "ippo-JMSRA-v0"
    info = json.loads((run / "run.json").read_text())
    assert (info["algorithm"], info["num_timesteps"], info["ppo"]["batch_size"]) == ("ippo", 1024, 256)
    assert marl_main(["--resume", str(run), "--total-frames", "2048"]) == 0
    assert ck.load_trained_policy(run).num_timesteps == 2048
    assert marl_main(["--resume", str(run), "--algorithm", "mappo", "--total-frames", "4096"]) == 2


def test_jmsra_train_marl_reference_writes_the_torchrl_run_format(tmp_path):
    from jmsra_agents.marl import load_marl_policy
    from jmsra_agents.marl import main as marl_main

    assert marl_main(["--reference", "--logdir", str(tmp_path), "--total-frames", "128", "--frames-per-batch", "128",
                      "--minibatch-size", "64", "--n-epochs", "1", "--hidden", "16", "--depth", "1",
                      "--eval-rounds", "32", "--checkpoint-every", "0", "--device", "cpu"]) == 0
    assert load_marl_policy(tmp_path / "mappo-JMSRA-v0").name == "mappo"


@pytest.mark.parametrize("argv, message", [
    (["--encoding", "request"], "--encoding request applies to --reference only"),
    (["--bc-scale", "0.2"], "--bc-scale applies to --reference only"),
    (["--frames-per-batch", "1000"], "--frames-per-batch must be a multiple of 1,024"),
    (["--reference", "--resume", "x"], "--resume does not apply to --reference"),
])
def test_jmsra_train_marl_refuses_flags_that_do_not_apply(tmp_path, capsys, argv, message):
    from jmsra_agents.marl import main as marl_main

    assert marl_main([*argv, "--logdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
