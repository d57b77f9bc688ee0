"""Run directories under faults: kills, SIGTERM, concurrent runs, --force, torn saves, crafted pickles."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jmsra_agents import checkpoint as ck
from jmsra_agents import runs
from jmsra_agents.cli_train import main
from jmsra_agents.training import TrainSpec, TrainSpecError, resume_spec, train
from jmsra_env.world import WorldProcess

ROOT = Path(__file__).resolve().parents[1]
# Tiny runs: a rollout is 2 x 32 steps; every rollout checkpoints and evaluates (saves often).
TINY = ["--n-envs", "2", "--n-steps", "32", "--batch-size", "64", "--n-epochs", "1", "--net-arch", "16",
        "--bc-steps", "0", "--eval-freq", "64", "--eval-episodes", "1", "--checkpoint-freq", "64",
        "--compare-episodes", "0", "--no-progress-bar", "--device", "cpu"]
TINY_SPEC = dict(n_envs=2, bc_steps=0, eval_freq=64, eval_episodes=1, checkpoint_freq=64, compare_episodes=0,
                 progress_bar=False, device="cpu")


def _tiny_ppo():
    from jmsra_agents.training import default_ppo

    return default_ppo(0, n_steps=32, batch_size=64, n_epochs=1, net_arch=(16,))


def _start(logdir: Path, name: str, *extra: str) -> subprocess.Popen:
    """``jmsra-train`` in a subprocess (``python -m jmsra_agents.cli_train``), a long target."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "jmsra_agents.cli_train", "--logdir", str(logdir), "--run-name", name,
           "--total-timesteps", "1000000", *TINY, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() - t0 < timeout_s, f"{path} did not appear"
        time.sleep(0.05)


def _observations(config, n: int = 256):
    world = WorldProcess(config, n)
    world.reset(np.random.default_rng(5))
    return world.observation()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    result = train(TrainSpec(total_timesteps=128, logdir=str(logdir), run_name="tiny", ppo=_tiny_ppo(), **TINY_SPEC),
                   log=None)
    assert result.status == "final" and result.exit_code == 0 and result.num_timesteps == 128
    assert result.run_dir == logdir / "tiny" and result.checkpoint_path == logdir / "tiny/checkpoints/ckpt_128_steps"
    assert "eval/latency_s" in result.metrics
    return result.run_dir


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("tb"))
    return dest


# ---------------------------------------------------------------------------------------------
# The safe format


def test_safe_format_round_trips_to_identical_actions(tiny_run):
    for path in (tiny_run, tiny_run / "best_model.zip", tiny_run / "checkpoints" / "ckpt_64_steps"):
        safe = ck.load_trained_policy(path)
        sb3 = ck.load_trained_policy(path, trust_pickle=True)
        assert isinstance(safe.model, ck.SafeActor) and safe.num_timesteps == sb3.num_timesteps
        obs = _observations(safe.config)
        np.testing.assert_array_equal(safe.predict(obs)[0], sb3.predict(obs)[0])
        one = {k: v[0] for k, v in obs.items()}
        np.testing.assert_array_equal(safe.predict(one)[0], sb3.predict(one)[0])
        assert safe.env_id == sb3.env_id and safe.config == sb3.config and safe.features == sb3.features


def test_crafted_pickle_in_a_model_directory_is_never_executed(tmp_path, tiny_run):
    class Payload:
        def __init__(self, marker: Path):
            self.marker = str(marker)

        def __reduce__(self):
            return (os.mkdir, (self.marker,))

    probe = tmp_path / "probe"  # the payload works: unpickling it creates its marker
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.is_dir()

    run = _copy(tiny_run, tmp_path / "shared")
    marker = tmp_path / "pwned"
    (run / "vecnormalize.pkl").write_bytes(pickle.dumps(Payload(marker)))
    policy = ck.load_trained_policy(run)  # reads JSON + safetensors only
    assert policy.num_timesteps == 128 and not marker.exists()
    with pytest.raises(ck.TornModelError, match="vecnormalize.pkl"):  # trusted: the manifest still refuses it
        ck.load_trained_policy(run, trust_pickle=True)
    assert not marker.exists()


def test_a_run_without_safe_files_needs_trust_pickle(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "old")  # as written before the safe format (run format /1)
    for name in ("policy.json", "policy.safetensors"):
        (run / name).unlink()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "format": "jmsra_env.run/1"}))
    with pytest.raises(FileNotFoundError, match="--trust-pickle"):
        ck.load_trained_policy(run)
    assert ck.load_trained_policy(run, trust_pickle=True).num_timesteps == 128


def test_torn_pair_is_refused_and_resume_takes_the_newest_consistent_checkpoint(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "torn")
    older = run / "checkpoints" / "ckpt_64_steps"
    (run / "vecnormalize.pkl").write_bytes((older / "vecnormalize.pkl").read_bytes())
    best = (run / "best_policy.safetensors").read_bytes()
    other = next(b for d in ("ckpt_64_steps", "ckpt_128_steps")
                 if (b := (run / "checkpoints" / d / "policy.safetensors").read_bytes()) != best)
    (run / "best_policy.safetensors").write_bytes(other)  # weights of another step
    with pytest.raises(ck.TornModelError, match="vecnormalize.pkl"):
        ck.load_trained_policy(run, trust_pickle=True)
    with pytest.raises(ck.TornModelError, match="best_policy.safetensors"):
        ck.load_trained_policy(run / "best_model.zip")
    shutil.rmtree(run / "checkpoints" / "ckpt_128_steps")
    point = runs.find_resume_point(run)
    assert point.unit.directory == older and point.num_timesteps == 64
    assert any("torn" in reason for reason in point.passed_over)


# ---------------------------------------------------------------------------------------------
# The API and the command line


@pytest.mark.parametrize("change, message", [
    ({"vec": "threads"}, "--vec must be one of"),
    ({"n_envs": 0}, "--n-envs must be >= 1"),
    ({"total_timesteps": 0}, "--total-timesteps must be a positive integer"),
    ({"config_overrides": {"n_agents": -1}}, "n_agents"),
])
def test_train_refuses_a_bad_spec_before_writing_anything(tmp_path, change, message):
    with pytest.raises(TrainSpecError, match=message):
        train(TrainSpec(logdir=str(tmp_path / "runs"), **{**TINY_SPEC, **change}), log=None)
    assert not (tmp_path / "runs").exists()


def test_every_ppo_config_field_is_a_flag_and_reaches_the_spec():
    import dataclasses

    from jmsra_agents.cli_train import build_parser, spec_from_args
    from jmsra_agents.ppo import PPOConfig

    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--" + f.name.replace("_", "-") for f in dataclasses.fields(PPOConfig)} <= flags
    argv = ["--n-steps", "64", "--no-ortho-init", "--net-arch", "8,8", "--target-kl", "0.02", "--bc-steps", "5"]
    spec = spec_from_args(parser.parse_args(argv), argv, parser)
    assert spec.ppo == PPOConfig(learning_rate=3e-5, log_std_init=-3.0, n_steps=64, ortho_init=False,
                                 net_arch=(8, 8), target_kl=0.02)


def test_console_entry_point_names_the_cli_main():
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["jmsra-train"].partition(":")
    assert getattr(importlib.import_module(module), name) is main


# ---------------------------------------------------------------------------------------------
# --force, locks, resume conflicts


def test_force_on_a_non_run_directory_refuses_and_deletes_nothing(tmp_path, capsys):
    thesis = tmp_path / "runs" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(tmp_path / "runs"), "--run-name", "thesis", "--force", *TINY])
    assert exc.value.code == 2
    assert "not a run directory of this tool" in capsys.readouterr().err
    assert [p.name for p in thesis.iterdir()] == ["thesis.tex"]


def test_force_refuses_to_delete_a_run_held_by_a_live_process(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "runs" / "live")
    before = sorted(p.name for p in run.iterdir())
    with runs.lock_run_dir(run):  # a second open file description: flock conflicts as with another process
        with pytest.raises(TrainSpecError, match="in use by a live training process"):
            train(TrainSpec(total_timesteps=64, logdir=str(tmp_path / "runs"), run_name="live", force=True,
                            ppo=_tiny_ppo(), **TINY_SPEC), log=None)
    assert sorted(p.name for p in run.iterdir()) == before


def test_stale_lock_of_a_dead_process_does_not_block(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "runs" / "stale")
    (run / runs.LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
    with runs.lock_run_dir(run) as lock:
        assert json.loads((run / runs.LOCK_FILE).read_text())["pid"] == os.getpid() and lock.run_dir == run


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--features", "log", "--features 'log'"),
        ("--env-id", "jmsra_env/JMSRA-N8-Box-v1", "--env-id"),
        ("--config", "n_agents=8", "--config"),
        ("--learning-rate", "0.1", "--learning-rate 0.1"),
        ("--action-encoding", "box", "--action-encoding"),
    ],
)
def test_resume_with_a_conflicting_flag_is_refused_naming_it(tmp_path, tiny_run, capsys, flag, value, message):
    run = _copy(tiny_run, tmp_path / "r")
    before = (run / "run.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--total-timesteps", "256", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "conflicts with the run" in err
    assert (run / "run.json").read_bytes() == before


def test_resume_spec_keeps_the_runs_settings_and_takes_new_budgets(tiny_run):
    spec = resume_spec(str(tiny_run), total_timesteps=512, n_envs=4, features="physics")
    assert spec.resume == str(tiny_run) and spec.total_timesteps == 512 and spec.n_envs == 4
    assert spec.ppo == _tiny_ppo() and spec.bc_steps == 0 and spec.eval_freq == 64


# ---------------------------------------------------------------------------------------------
# Signals and kills (subprocesses)


def test_sigterm_saves_and_exits_143_and_a_second_run_with_the_name_is_refused(tmp_path, capsys):
    proc = _start(tmp_path, "job")
    run = tmp_path / "job"
    _wait_for(run / "checkpoints" / "ckpt_64_steps", proc)
    for extra, message in (([], "already exists"), (["--force"], "in use by a live training process"),
                           (["--resume", str(run)], "in use by a live training process")):
        with pytest.raises(SystemExit) as exc:
            main(["--logdir", str(tmp_path), "--run-name", "job", *TINY, *extra])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    assert "SIGTERM" in out and f"--resume {run}" in out
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "interrupted"
    assert ck.load_trained_policy(run).num_timesteps == info["num_timesteps"] >= 64


def test_sigkill_at_random_moments_leaves_runs_that_resume_continues(tmp_path, capsys):
    seeds = (0, 1, 2)
    procs = {seed: _start(tmp_path, f"k{seed}") for seed in seeds}  # side by side: one start-up cost
    for seed, proc in procs.items():
        _wait_for(tmp_path / f"k{seed}" / "checkpoints" / "ckpt_64_steps", proc)
    for seed, proc in procs.items():
        time.sleep(np.random.default_rng(seed).uniform(0.0, 1.0))
        proc.kill()
        proc.communicate()
    for seed in seeds:
        run = tmp_path / f"k{seed}"
        newest = runs.find_resume_point(run)
        assert newest.num_timesteps >= 64
        target = newest.num_timesteps + 64
        assert main(["--resume", str(run), "--total-timesteps", str(target)]) == 0
        out = capsys.readouterr().out
        assert f"at {newest.num_timesteps:,} steps" in out and f"{target:,} steps (64 in this session" in out
        assert ck.load_trained_policy(run).num_timesteps == target
        assert ck.load_trained_policy(run, trust_pickle=True).num_timesteps == target
        assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


# SIGKILL itself at the first write of a file named argv[1]: a kill between two files of one save
KILL_AT_FILE = """
import os, signal, sys
from pathlib import Path
import jmsra_agents.checkpoint as ck
name, write = sys.argv[1], ck.atomic_write_bytes
def killing_write(path, data):
    if Path(path).name == name:
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, data)
ck.atomic_write_bytes = killing_write
from jmsra_agents.cli_train import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_between_the_files_of_a_save_is_refused_at_load_and_repaired_by_resume(tmp_path, capsys):
    run = tmp_path / "t"
    cmd = [sys.executable, "-c", KILL_AT_FILE, "best_policy.safetensors", "--logdir", str(tmp_path), "--run-name",
           "t", "--total-timesteps", "1000000", *TINY, "--eval-freq", "128"]  # checkpoint at 64, best model at 128
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (run / "best_model.zip").is_file() and not (run / "best_policy.json").exists()
    for trust in (False, True):
        with pytest.raises(ck.TornModelError, match="incomplete saved model"):
            ck.load_trained_policy(run / "best_model.zip", trust_pickle=trust)
    assert main(["--resume", str(run), "--total-timesteps", "192"]) == 0
    out = capsys.readouterr().out
    assert "at 64 steps" in out and "removed what an interrupted save left" in out
    assert ck.load_trained_policy(run / "best_model.zip").num_timesteps in (128, 192)
    assert ck.load_trained_policy(run).num_timesteps == 192


def test_ctrl_c_during_behaviour_cloning_saves_and_resume_finishes_it(tmp_path, monkeypatch):
    import jmsra_agents.bc as bc

    original = bc._fit

    def seven_steps_then_ctrl_c(policy, params, opt, sched, gen, xs, ys, vs, steps, *rest):
        original(policy, params, opt, sched, gen, xs, ys, vs, 7, *rest)
        raise KeyboardInterrupt

    argv = ["--logdir", str(tmp_path), "--run-name", "bc", *TINY, "--bc-steps", "20", "--bc-rounds", "500",
            "--total-timesteps", "64"]
    monkeypatch.setattr(bc, "_fit", seven_steps_then_ctrl_c)
    assert main(argv) == 130
    info = json.loads((tmp_path / "bc" / "run.json").read_text())
    assert info["kind"] == "interrupted" and info["num_timesteps"] == 0 and info["bc"]["steps_done"] == 7
    monkeypatch.setattr(bc, "_fit", original)
    assert main(["--resume", str(tmp_path / "bc")]) == 0
    info = json.loads((tmp_path / "bc" / "run.json").read_text())
    assert info["kind"] == "final" and info["num_timesteps"] == 64 and info["bc"]["steps_done"] == 20


# ---------------------------------------------------------------------------------------------
# Issue 19: a run is what its run.json says, flags checked before anything exists, exact resume


def test_force_with_a_lock_file_next_to_user_data_deletes_nothing(tmp_path, capsys):
    thesis = tmp_path / "runs" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "thesis.tex").write_text("years of work")
    (thesis / runs.LOCK_FILE).write_text("")  # a marker proves nothing
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(tmp_path / "runs"), "--run-name", "thesis", "--force", *TINY])
    assert exc.value.code == 2
    assert "not a run directory of this tool" in capsys.readouterr().err
    assert sorted(p.name for p in thesis.iterdir()) == [runs.LOCK_FILE, "thesis.tex"]
    assert not runs.is_run_dir(thesis)


def test_force_refuses_a_run_that_also_holds_user_files(tmp_path, tiny_run, capsys):
    run = _copy(tiny_run, tmp_path / "runs" / "mixed")
    (run / "notes.txt").write_text("mine")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(tmp_path / "runs"), "--run-name", "mixed", "--force", *TINY])
    assert exc.value.code == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_run_json_of_another_format_is_not_a_run(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"format": "somebody-else/1"}))
    assert not runs.is_run_dir(d)
    (d / "run.json").write_text("[" * 100_000)
    assert not runs.is_run_dir(d)


def test_force_whose_new_start_fails_puts_the_old_run_back(tmp_path, tiny_run, monkeypatch):
    import jmsra_agents.ppo

    run = _copy(tiny_run, tmp_path / "runs" / "old")
    def contents():  # the lock file names its last holder: not data
        return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != runs.LOCK_FILE}

    before = contents()

    def boom(*a, **k):
        raise RuntimeError("no memory")

    monkeypatch.setattr(jmsra_agents.ppo, "make_ppo", boom)
    with pytest.raises(RuntimeError, match="no memory"):
        train(TrainSpec(total_timesteps=64, logdir=str(tmp_path / "runs"), run_name="old", force=True,
                        ppo=_tiny_ppo(), **TINY_SPEC), log=None)
    assert contents() == before and len(before) > 10
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["old"]


def test_a_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    import jmsra_agents.ppo

    def boom(*a, **k):
        raise MemoryError("29.6 GB")

    monkeypatch.setattr(jmsra_agents.ppo, "make_ppo", boom)
    logdir = tmp_path / "deep" / "runs"
    with pytest.raises(MemoryError):
        train(TrainSpec(total_timesteps=64, logdir=str(logdir), run_name="x", ppo=_tiny_ppo(), **TINY_SPEC), log=None)
    assert not (tmp_path / "deep").exists()


def test_force_replaces_a_directory_holding_only_a_lock_of_a_killed_start(tmp_path):
    d = tmp_path / "runs" / "killed"
    d.mkdir(parents=True)
    (d / runs.LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "since": "then"}))
    lock = runs.open_run_dir(tmp_path / "runs", "killed", force=True)
    lock.commit()
    lock.release()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["killed"]


@pytest.mark.parametrize("extra, message", [
    (["--seed", "-1"], "--seed must be an integer in [0, 2,147,483,647]"),
    (["--seed", "99999999999999999999"], "--seed must be an integer in"),
    (["--log-std-init", "nan"], "--log-std-init must be a finite number"),
    (["--log-std-init", "1e300"], "--log-std-init must be a finite number in"),
    (["--bc-lr", "nan"], "--bc-lr must be a finite number"),
    (["--bc-lr", "-1"], "--bc-lr must be a finite number > 0"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number"),
    (["--net-arch", "100000000,100000000"], "--net-arch must be 1 to 32 layer sizes"),
    (["--net-arch", "8192,8192"], "--net-arch 8192,8192 makes a policy network of"),
    (["--target-kl", "-1"], "--target-kl must be a finite number > 0"),
    (["--target-kl", "nan"], "--target-kl must be a finite number"),
    (["--clip-range", "inf"], "--clip-range must be a finite number"),
    (["--n-envs", "100000"], "--n-envs must be an integer in"),
    (["--n-steps", "4000000"], "--n-steps x --n-envs"),
    (["--bc-rounds", "1000000000000"], "--bc-rounds must be an integer in"),
    (["--total-timesteps", "10000000000000000"], "--total-timesteps must be an integer in"),
    (["--eval-episodes", "-1"], "--eval-episodes must be an integer in"),
    (["--run-name", "x" * 300], "--run-name must be a plain directory name"),
])
def test_bad_flags_are_refused_by_name_before_any_file_exists(tmp_path, capsys, extra, message):
    logdir = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc:
        main(["--logdir", str(logdir), "--run-name", "x", "--total-timesteps", "64", *TINY, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()[-1]) < 400 and "Traceback" not in err
    assert not logdir.exists()


def test_bad_logdirs_are_refused_before_anything_is_created(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("data")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cases = [(afile, "is an existing file"), (afile / "sub", "below the file"), (Path("/proc/jmsra_runs"), "cannot create")]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((ro / "runs", "cannot create"))
    try:
        for logdir, message in cases:
            with pytest.raises(SystemExit) as exc:
                main(["--logdir", str(logdir), "--run-name", "x", "--total-timesteps", "64", *TINY])
            assert exc.value.code == 2
            err = capsys.readouterr().err
            assert "--logdir" in err and message in err, err
        assert afile.read_text() == "data" and list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_resume_after_a_signal_in_mid_rollout_stops_at_the_target_exactly(tmp_path, monkeypatch):
    from jmsra_agents.callbacks import RoundMetricsCallback

    original = RoundMetricsCallback._on_step

    def interrupt_mid_rollout(self):
        if self.model.num_timesteps == 104:  # rollouts are 64 steps: 40 into the second one
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(RoundMetricsCallback, "_on_step", interrupt_mid_rollout)
    first = train(TrainSpec(total_timesteps=256, logdir=str(tmp_path), run_name="r", ppo=_tiny_ppo(), **TINY_SPEC),
                  log=None)
    assert first.status == "interrupted" and first.num_timesteps == 104
    monkeypatch.setattr(RoundMetricsCallback, "_on_step", original)
    second = train(resume_spec(str(tmp_path / "r")), log=None)
    assert second.status == "final" and second.num_timesteps == 256  # not 296
    assert ck.load_trained_policy(tmp_path / "r").num_timesteps == 256
    assert json.loads((tmp_path / "r" / "run.json").read_text())["num_timesteps"] == 256


def test_resume_of_a_run_with_a_malformed_run_json_is_refused_by_name(tmp_path, tiny_run, capsys):
    run = _copy(tiny_run, tmp_path / "r")
    for unit_dir in (run, *(run / "checkpoints").iterdir()):
        info = json.loads((unit_dir / "run.json").read_text())
        info["ppo"] = {"bogus": 1}
        (unit_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--total-timesteps", "256"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "Traceback" not in err


def test_force_replaces_a_sweep_trials_run_with_its_result_file(tmp_path, tiny_run):
    run = _copy(tiny_run, tmp_path / "runs" / "trial")
    (run / "trial_result.json").write_text("{}")  # what jmsra_agents.sweep writes next to a trial's run
    lock = runs.open_run_dir(tmp_path / "runs", "trial", force=True)
    lock.commit()
    lock.release()
    assert [p.name for p in run.iterdir()] == [runs.LOCK_FILE]


def test_force_refuses_a_run_name_of_the_wrong_kind(tmp_path, tiny_run, capsys):
    run = _copy(tiny_run, tmp_path / "runs" / "odd")
    (run / "evaluations.json").unlink(missing_ok=True)
    (run / "evaluations.json").mkdir()
    (run / "evaluations.json" / "mine.txt").write_text("data")
    with pytest.raises(runs.RunDirError, match="evaluations.json"):
        runs.open_run_dir(tmp_path / "runs", "odd", force=True)
    assert (run / "evaluations.json" / "mine.txt").read_text() == "data"
