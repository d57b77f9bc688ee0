"""train.py --backend torch (jmsra_agents.torch_ppo): learning, resume, the safe format through evaluate.py,
determinism, and the backend's bad input. Tiny runs on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import jmsra_env  # noqa: F401 - registers the environments
from jmsra_agents import checkpoint as ck
from jmsra_agents.cli_train import main
from jmsra_agents.training import TrainSpec, TrainSpecError, _validate, resume_spec, torch_context, train

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete torch-backend run: 64 envs x 4 steps per rollout (256 env-steps per update).
TINY = [
    "--backend", "torch", "--n-envs", "64", "--n-steps", "4", "--batch-size", "128", "--n-epochs", "2",
    "--net-arch", "16,16", "--bc-steps", "0", "--eval-freq", "512", "--eval-episodes", "2",
    "--checkpoint-freq", "512", "--compare-episodes", "0", "--no-progress-bar", "--device", "cpu",
]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(path.read_bytes())


@pytest.fixture(scope="module")
def torch_result(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    return train(_spec(logdir, "smoke", seed=3, eval_freq=512, compare_episodes=2), log=None)


@pytest.fixture(scope="module")
def torch_run(torch_result):
    return torch_result.run_dir


def test_run_directory_holds_a_pickle_free_unit_and_tensorboard_tags(torch_run):
    unit = ["policy.json", "policy.safetensors", "trainer.safetensors"]
    for name in (*unit, "run.json", *(f"best_{n}" for n in unit), ".jmsra_run.lock", "evaluations.json"):
        assert (torch_run / name).is_file(), name
    assert not list(torch_run.rglob("*.zip")) and not list(torch_run.rglob("*.pkl"))
    for steps in (512, 1024):
        d = torch_run / "checkpoints" / f"ckpt_{steps}_steps"
        assert sorted(p.name for p in d.iterdir()) == sorted([*unit, "run.json"])
    info = json.loads((torch_run / "run.json").read_text())
    assert info["backend"] == "torch" and info["args"]["backend"] == "torch"
    assert info["kind"] == "final" and info["num_timesteps"] == 1024
    assert json.loads((torch_run / "policy.json").read_text())["run"]["backend"] == "torch"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (torch_run / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"rounds/latency_s", "eval/latency_s", "eval/gap_to_jmsra_pct", "train/approx_kl",
            "time/env_steps_per_s"} <= tags


def test_saved_policy_evaluates_identically_through_evaluate_py(torch_result, tmp_path):
    """The trainer's held-out figure (its live policy through the evaluation core) equals what
    evaluate.py --model computes from the safe files (no --trust-pickle), to the last bit."""
    from jmsra_agents.cli_evaluate import main as evaluate

    result = torch_result
    assert ck.load_trained_policy(result.run_dir).num_timesteps == 1024
    assert ck.load_trained_policy(result.run_dir, trust_pickle=True).num_timesteps == 1024  # no pickle to trust
    out = tmp_path / "ev"
    assert evaluate(["--model", f"ppo={result.run_dir}", "--episodes", "2", "--policies", "jmsra", "--out", str(out),
                     "--no-plots", "--no-progress"]) == 0
    rows = {r["policy"]: r for r in json.loads((out / "summary.json").read_text())["policies"]}
    assert rows["ppo"]["mean_latency_s"] == result.metrics["compare/ppo_latency_s"]
    assert rows["jmsra"]["mean_latency_s"] == result.metrics["compare/jmsra_latency_s"]


def _spec(tmp_path, name, **kw):
    from jmsra_agents.training import default_ppo

    base = dict(backend="torch", n_envs=64, total_timesteps=1024, bc_steps=0, eval_freq=0, eval_episodes=2,
                compare_episodes=0, checkpoint_freq=512, logdir=str(tmp_path), run_name=name, progress_bar=False,
                ppo=default_ppo(0, backend="torch", n_steps=4, batch_size=128, n_epochs=2, net_arch=(16, 16)))
    return TrainSpec(**{**base, **kw})


def test_resume_continues_the_step_count_weights_and_optimiser_exactly(tmp_path):
    first = train(_spec(tmp_path, "res", total_timesteps=768), log=None)
    assert first.num_timesteps == 768
    saved_w = _weights(first.run_dir / "policy.safetensors")
    saved_t = _weights(first.run_dir / "trainer.safetensors")
    spec = resume_spec(str(first.run_dir), total_timesteps=1536)
    from jmsra_agents.torch_ppo import TorchRun

    run = TorchRun(_validate(spec), first.run_dir, lambda m: None, {"signal": None}, torch_context())
    run._build()
    assert run.num_timesteps == 768
    for k, v in run.ac.state_dict().items():
        assert torch.equal(v.cpu(), saved_w[k]), k
    assert torch.equal(run.gen.get_state(), saved_t["generator_state"])
    for k, v in saved_t.items():
        if k.startswith("adam."):
            _, name, key = k.split(".", 1)[0], *k[len("adam."):].rsplit(".", 1)
            assert torch.equal(run.opt.state[dict(run.ac.named_parameters())[name]][key].cpu(), v), k
    run.writer.close()
    run.env.close()
    more = train(spec, log=None)
    assert more.num_timesteps == 1536 and more.steps_this_session == 768
    assert json.loads((first.run_dir / "run.json").read_text())["num_timesteps"] == 1536
    assert sorted(p.name for p in (first.run_dir / "checkpoints").iterdir()) == [
        "ckpt_1024_steps", "ckpt_1536_steps", "ckpt_512_steps", "ckpt_768_steps"]


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    runs = [train(_spec(tmp_path, f"s{i}", seed=seed, total_timesteps=512, checkpoint_freq=0), log=None)
            for i, seed in enumerate((5, 5, 6))]
    a, b, c = (_weights(r.run_dir / "policy.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_learning_moves_the_gap_to_jmsra_down_on_a_tiny_budget(tmp_path):
    """Pure PPO from a random network on JMSRA-v0: the deterministic policy's gap to JMSRA on the
    evaluation seeds falls by a third within 49,152 env-steps (measured: +54.7 % -> +22.7 %)."""
    from jmsra_agents.training import default_ppo

    spec = _spec(tmp_path, "learn", n_envs=512, total_timesteps=49_152, eval_freq=49_152, eval_episodes=4,
                 checkpoint_freq=0, seed=0,
                 ppo=default_ppo(0, backend="torch", n_steps=8, batch_size=1024, n_epochs=4, net_arch=(64, 64),
                                 learning_rate=3e-3, desired_kl=0.0))
    result = train(spec, log=None)
    curve = json.loads((result.run_dir / "evaluations.json").read_text())["evaluations"]
    assert [r["timesteps"] for r in curve] == [0, 49_152]
    start, end = curve[0]["gap_to_jmsra_pct"], curve[-1]["gap_to_jmsra_pct"]
    assert end < 2.0 / 3.0 * start, curve


def test_sigkill_then_resume_finishes_from_the_newest_checkpoint(tmp_path):
    args = ["--total-timesteps", "200000", "--logdir", str(tmp_path), "--run-name", "k", *TINY, "--eval-freq", "0",
            "--checkpoint-freq", "256"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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


# -- bad input: refused before anything is created, naming the flag ------------------------------------


def _refused(capsys, argv, message, logdir):
    before = sorted(str(p) + str(p.stat().st_mtime_ns) for p in logdir.rglob("*")) if logdir.exists() else None
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    after = sorted(str(p) + str(p.stat().st_mtime_ns) for p in logdir.rglob("*")) if logdir.exists() else None
    assert after == before


def test_torch_backend_on_cuda_without_cuda_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    logdir = tmp_path / "runs"
    _refused(capsys, ["--logdir", str(logdir), "--run-name", "x", *TINY, "--device", "cuda"], "--device cuda", logdir)
    assert not logdir.exists()


@pytest.mark.parametrize("argv, message", [
    ([*TINY, "--vec", "native"], "--vec applies to the sb3 backend only"),
    (["--desired-kl", "0.01"], "--desired-kl applies to the torch backend only"),
    (["--backend", "sb3", "--bc-coef", "0.5"], "--bc-coef applies to the torch backend only"),
    (["--dagger-episodes", "8"], "--dagger-episodes applies to the torch backend only"),
    ([*TINY, "--dagger-episodes", "-1"], "dagger_episodes must be an integer in [0, 65,536]"),
    (["--backend", "jax"], "--backend"),
])
def test_a_flag_of_the_other_backend_is_refused(tmp_path, capsys, argv, message):
    logdir = tmp_path / "runs"
    _refused(capsys, ["--logdir", str(logdir), "--run-name", "x", *argv], message, logdir)
    assert not logdir.exists()


def test_a_torch_run_resumed_with_the_sb3_backend_is_refused_and_untouched(torch_run, capsys):
    _refused(capsys, ["--resume", str(torch_run), "--backend", "sb3", "--total-timesteps", "4096"],
             "--backend 'sb3' (run: 'torch')", torch_run)
    _refused(capsys, ["--resume", str(torch_run), "--vec", "native", "--total-timesteps", "4096"],
             "--vec 'native' applies to the sb3 backend only", torch_run)


def test_an_sb3_run_resumed_with_the_torch_backend_is_refused_and_untouched(tmp_path, capsys):
    sb3 = ["--n-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--net-arch", "8",
           "--bc-steps", "0", "--eval-freq", "0", "--checkpoint-freq", "0", "--compare-episodes", "0",
           "--no-progress-bar"]
    assert main(["--total-timesteps", "128", "--logdir", str(tmp_path), "--run-name", "sb3", *sb3]) == 0
    run = tmp_path / "sb3"
    _refused(capsys, ["--resume", str(run), "--backend", "torch", "--total-timesteps", "256"],
             "--backend 'torch' (run: 'sb3')", run)
    _refused(capsys, ["--resume", str(run), "--desired-kl", "0.1", "--total-timesteps", "256"],
             "--desired-kl applies to the torch backend only", run)
    with pytest.raises(TrainSpecError, match="--backend"):
        resume_spec(str(run), backend="torch")


def test_ctrl_c_saves_the_model_and_resume_continues(tmp_path, capsys, interrupt_second_torch_update):
    assert main(["--total-timesteps", "4096", "--logdir", str(tmp_path), "--run-name", "cc", *TINY]) == 130
    info = json.loads((tmp_path / "cc" / "run.json").read_text())
    assert info["kind"] == "interrupted" and info["num_timesteps"] == 256
    assert ck.load_trained_policy(tmp_path / "cc").num_timesteps == 256
    assert "--resume" in capsys.readouterr().out
    interrupt_second_torch_update()  # the real update again
    assert main(["--resume", str(tmp_path / "cc"), "--total-timesteps", "768", "--no-progress-bar"]) == 0
    assert json.loads((tmp_path / "cc" / "run.json").read_text())["num_timesteps"] == 768


def test_dagger_labels_the_clones_own_session_states_and_clones_again(tmp_path):
    """--dagger-rounds on a session: each round rolls the clone through as many episodes as the
    cloning set (2 x 64 states), the expert labels them, and the clone is fitted on the union."""
    assert main(["--env-id", "jmsra_env/JMSRA-Session-v0", "--logdir", str(tmp_path), "--run-name", "dg", *TINY,
                 "--bc-steps", "20", "--bc-rounds", "128", "--bc-expert", "pool-aware", "--dagger-rounds", "2",
                 "--total-timesteps", "256", "--eval-freq", "0", "--checkpoint-freq", "0"]) == 0
    bc = json.loads((tmp_path / "dg" / "run.json").read_text())["bc"]
    assert [r["rows"] for r in bc["dagger"]] == [256, 384] and [r["steps"] for r in bc["dagger"]] == [10, 10]
    assert all(r["action_mse"] == r["action_mse"] for r in bc["dagger"])  # finite losses (not NaN)


def test_dagger_episodes_sets_the_states_labelled_per_round(tmp_path):
    """--dagger-episodes 1: a DAgger round labels one episode (64 states), not the cloning set's two."""
    assert main(["--env-id", "jmsra_env/JMSRA-Session-v0", "--logdir", str(tmp_path), "--run-name", "de", *TINY,
                 "--bc-steps", "20", "--bc-rounds", "128", "--bc-expert", "pool-aware", "--dagger-rounds", "1",
                 "--dagger-episodes", "1", "--total-timesteps", "256", "--eval-freq", "0", "--checkpoint-freq", "0"]) == 0
    assert [r["rows"] for r in json.loads((tmp_path / "de" / "run.json").read_text())["bc"]["dagger"]] == [192]
