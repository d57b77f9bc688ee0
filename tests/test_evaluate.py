"""evaluate.py and jmsra_env.evaluation: common-random-number evaluation, outputs, sweeps, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import actions, evaluation as ev, model
from jmsra_env.policies import ExpertPolicy

from jmsra_agents import cli_evaluate as evaluate


SHORT = ["--config", "episode_rounds=16", "--no-progress"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _train_tiny(logdir: Path, env_id: str, name: str) -> Path:
    """A real run directory from train.py (256 PPO steps on N = 4, its default action encoding)."""
    import train

    argv = ["--env-id", env_id, "--total-timesteps", "256", "--n-envs", "2",
            "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--bc-steps", "0",
            "--eval-freq", "1000000", "--compare-episodes", "0", "--device", "cpu",
            "--no-progress-bar", "--logdir", str(logdir), "--run-name", name]
    assert train.main(argv) == 0
    return logdir / name


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _train_tiny(tmp_path_factory.mktemp("runs"), "jmsra_env/JMSRA-Box-v1", "tiny-n4")


@pytest.fixture(scope="module")
def tiny_stale_model(tmp_path_factory):
    """Trained with --env-id jmsra_env/JMSRA-StaleCSI-v0, i.e. on its Box twin."""
    return _train_tiny(tmp_path_factory.mktemp("runs"), "jmsra_env/JMSRA-StaleCSI-v0", "tiny-stale")


def test_small_evaluation_writes_parseable_outputs_with_one_row_per_policy(tmp_path, capsys):
    assert evaluate.main(["--episodes", "3", "--out", str(tmp_path), *SHORT]) == 0
    out = capsys.readouterr().out
    assert "No trained model given" in out

    rows = _read_csv(tmp_path / "summary.csv")
    names = list(ev.expert_names())
    assert [r["policy"] for r in rows] == names  # N = 4: every expert and baseline, optimal included
    means = {r["policy"]: float(r["mean_latency_s"]) for r in rows}
    assert all(means["optimal"] <= m * (1 + 1e-9) for m in means.values())
    assert means["optimal"] < means["nl-only"] and means["optimal"] < means["kv-only"]
    assert {r["reference"] for r in rows} == {"optimal"} and float(rows[0]["gap_pct"]) == 0.0

    # The CI is the t interval over per-episode means of the per-round latencies in rounds.csv.
    per_round = _read_csv(tmp_path / "rounds.csv")
    assert len(per_round) == 3 * 16
    from scipy import stats

    lat = np.array([float(r["jmsra"]) for r in per_round]).reshape(3, 16)
    ep = lat.mean(axis=1)
    half = stats.t.ppf(0.975, 2) * ep.std(ddof=1) / math.sqrt(3)
    jrow = next(r for r in rows if r["policy"] == "jmsra")
    assert float(jrow["ci95_s"]) == pytest.approx(half, rel=1e-6)
    assert float(jrow["p95_latency_s"]) == pytest.approx(np.percentile(lat, 95), rel=1e-6)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [p["policy"] for p in summary["policies"]] == names
    assert summary["reference"] == "optimal" and summary["scenario"]["n_agents"] == 4
    assert all(p["decision_ms_per_round"] > 0 for p in summary["policies"])
    timing = _read_csv(tmp_path / "timing.csv")
    assert [t["policy"] for t in timing] == names

    md = (tmp_path / "summary.md").read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + len(names) and "mean E2E" in table[0]

    import matplotlib.image

    for png in ("latency_cdf.png", "latency_bars.png"):
        img = matplotlib.image.imread(tmp_path / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_same_seed_gives_byte_identical_csv(tmp_path):
    argv = ["--episodes", "2", "--policies", "jmsra,nl-only,random", "--no-plots", *SHORT]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert evaluate.main([*argv, "--seed", "5", "--out", str(a)]) == 0
    assert evaluate.main([*argv, "--seed", "5", "--out", str(b)]) == 0
    assert evaluate.main([*argv, "--seed", "6", "--out", str(c)]) == 0
    for name in ("summary.csv", "rounds.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()


def test_recorded_rounds_and_latencies_equal_stepping_the_real_env():
    """The shortcut (rounds drawn once, every policy charged with the model) is the env, exactly.

    JMSRA as an env policy (jmsra_env.policies) steps the real Box env with stale CSI (observed SNR
    one round old) for 70 rounds (past the world's 64-round chunk): the observations are the
    recorded ones, the reward is exactly the model latency of the recorded true terms, and equals
    the evaluation's JMSRA latency.
    """
    from jmsra_env.policies import make_policy

    env_id = "jmsra_env/JMSRA-StaleCSI-Box-v1"
    cfg, _ = ev.scenario_from_env_id(env_id, {"episode_rounds": 70})
    rounds = ev.draw_rounds(cfg, 2, seed=11)
    (result,) = ev.evaluate_policies(rounds, [ExpertPolicy("jmsra", cfg)], single_round_budget_s=0.0)
    env = gym.make(env_id, config={"episode_rounds": 70})
    policy = make_policy("jmsra", env)
    for e in range(2):
        obs, _ = env.reset(seed=11 + e)
        for t in range(70):
            m = e * 70 + t
            for key, value in obs.items():
                np.testing.assert_array_equal(value, rounds.obs[key][m], err_msg=key)
            action, _ = policy.predict(obs, deterministic=True)
            decoded = actions.decode_box(action, env.unwrapped.observed_terms())
            obs, reward, _, truncated, _ = env.step(action)
            assert -reward == model.latency(rounds.terms[m], *decoded).latency_s  # exact
            assert -reward == pytest.approx(result.latency_s[m], rel=1e-9, abs=0.0)  # Box encoding rounding
        assert truncated


def test_bandwidth_sweep_shows_kv_only_overtaking_nl_only(tmp_path, capsys):
    # KV-only's *mean* carries rare capped rounds (agents in a deep fade are power-limited at any
    # bandwidth), so the crossover is asserted on the median latency, which resolves it robustly.
    argv = ["--sweep", "bandwidth", "--episodes", "4", "--out", str(tmp_path), "--no-progress"]
    assert evaluate.main(argv) == 0
    rows = _read_csv(tmp_path / "sweep_bandwidth.csv")
    assert (tmp_path / "sweep_bandwidth.png").stat().st_size > 1000
    assert {r["policy"] for r in rows} == {"nl-only", "kv-only", "jmsra", "optimal"}
    mean = {(float(r["value"]), r["policy"]): float(r["mean_latency_s"]) for r in rows}
    values = sorted({v for v, _ in mean})
    assert values[0] == 1e6 and values[-1] == 100e6
    median = {(float(r["value"]), r["policy"]): float(r["p50_latency_s"]) for r in rows}
    kv_better = [median[(v, "kv-only")] < median[(v, "nl-only")] for v in values]
    assert not kv_better[0] and kv_better[-1]  # NL wins on a narrow band, KV on a wide one
    assert kv_better == sorted(kv_better)  # one crossover
    # The optimum mixes media and is never worse than either single medium.
    for v in values:
        assert mean[(v, "optimal")] <= min(mean[(v, "nl-only")], mean[(v, "kv-only")]) * (1 + 1e-9)
    assert "KV-only beats NL-only" in capsys.readouterr().out


def test_optimal_is_skipped_by_default_above_twelve_agents_and_jmsra_is_the_reference(tmp_path, capsys):
    argv = ["--env-id", "jmsra_env/JMSRA-N16-v0", "--episodes", "2", "--config", "episode_rounds=4",
            "--no-plots", "--no-progress", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 0
    assert "'optimal'" in capsys.readouterr().out
    rows = _read_csv(tmp_path / "summary.csv")
    assert "optimal" not in {r["policy"] for r in rows}
    assert {r["reference"] for r in rows} == {"jmsra"}


def test_oracle_bounds_the_optimum_under_stale_csi_and_equals_it_without(tmp_path):
    argv = ["--oracle", "--policies", "optimal", "--episodes", "2", "--no-plots", *SHORT]
    stale, fresh = tmp_path / "stale", tmp_path / "fresh"
    assert evaluate.main([*argv, "--env-id", "jmsra_env/JMSRA-StaleCSI-v0", "--out", str(stale)]) == 0
    assert evaluate.main([*argv, "--out", str(fresh)]) == 0
    for folder, stale_csi in ((stale, True), (fresh, False)):
        rounds = _read_csv(folder / "rounds.csv")
        oracle = np.array([float(r["oracle"]) for r in rounds])
        optimal = np.array([float(r["optimal"]) for r in rounds])
        assert np.all(oracle <= optimal * (1 + 1e-9))
        if stale_csi:  # deciding on a one-round-old channel costs latency
            assert oracle.mean() < optimal.mean() * 0.99
        else:
            np.testing.assert_array_equal(oracle, optimal)
        kinds = {r["policy"]: r["kind"] for r in _read_csv(folder / "summary.csv")}
        assert kinds == {"oracle": "bound", "optimal": "expert"}


def test_trained_model_is_evaluated_next_to_the_experts(tmp_path, tiny_model):
    argv = ["--model", str(tiny_model), "--policies", "jmsra,nl-only", "--episodes", "2",
            "--no-plots", "--out", str(tmp_path), *SHORT]
    assert evaluate.main(argv) == 0
    rows = {r["policy"]: r for r in _read_csv(tmp_path / "summary.csv")}
    assert set(rows) == {"jmsra", "nl-only", "ppo:tiny-n4"}
    assert rows["ppo:tiny-n4"]["kind"] == "ppo"
    assert float(rows["ppo:tiny-n4"]["mean_latency_s"]) >= float(rows["jmsra"]["mean_latency_s"])

    # The model's charged latency is what the real environment gives for its actions.
    per_round = _read_csv(tmp_path / "rounds.csv")
    from jmsra_agents.checkpoint import load_trained_policy

    policy = load_trained_policy(tiny_model)
    env = gym.make("jmsra_env/JMSRA-Box-v1", config={"episode_rounds": 16})
    obs, _ = env.reset(seed=ev.DEFAULT_SEED)  # the evaluation's first episode
    for t in range(16):
        action, _ = policy.predict(obs, deterministic=True)
        obs, reward, *_ = env.step(action)
        assert -reward == pytest.approx(float(per_round[t]["ppo:tiny-n4"]), rel=1e-5)


def test_sweeps_include_a_model_where_it_fits(tmp_path, tiny_model, capsys):
    argv = ["--model", str(tiny_model), "--sweep", "agents", "--sweep-values", "2,4", "--episodes", "1",
            "--policies", "nl-only,kv-only", "--no-plots", "--out", str(tmp_path), *SHORT]
    assert evaluate.main(argv) == 0
    rows = _read_csv(tmp_path / "sweep_agents.csv")
    assert {(r["value"], r["policy"]) for r in rows} == {
        ("2", "nl-only"), ("2", "kv-only"), ("4", "nl-only"), ("4", "kv-only"), ("4", "ppo:tiny-n4")
    }


def test_a_model_trained_on_the_box_twin_is_evaluated_on_the_scenario_the_id_names(tmp_path, tiny_stale_model):
    argv = ["--env-id", "jmsra_env/JMSRA-StaleCSI-v0", "--model", str(tiny_stale_model), "--policies", "jmsra",
            "--no-plots", "--out", str(tmp_path), "--episodes", "2", "--no-progress"]
    assert evaluate.main(argv) == 0
    rows = {r["policy"]: r for r in _read_csv(tmp_path / "summary.csv")}
    assert set(rows) == {"jmsra", "ppo:tiny-stale"}
    notes = (tmp_path / "summary.md").read_text()
    assert "trained on another scenario" not in notes  # the same scenario: no difference to report


# -- bad input: a clear error naming the problem, and earlier results left alone -----------------


def _bad_cases(model_dir: Path | None):
    return {
        "missing model": (["--model", "/nonexistent/run"], "does not exist"),
        "unknown policy": (["--policies", "jmsra,jmsar"], "unknown policy 'jmsar'. Did you mean 'jmsra'?"),
        "unknown sweep": (["--sweep", "bandwdith"], "unknown sweep 'bandwdith'. Did you mean 'bandwidth'?"),
        "optimal above 12 agents": (
            ["--env-id", "jmsra_env/JMSRA-N16-v0", "--policies", "optimal,jmsra"], "N <= 12"
        ),
        "optimal in an agents sweep past 12": (
            ["--sweep", "agents", "--policies", "optimal"], "the sweep reaches N = 16"
        ),
        "unknown env id": (["--env-id", "jmsra_env/JMSRA-N9-v0"], "unknown environment id"),
        "unknown config key": (["--config", "bandwith_hz=1e6"], "bandwith_hz"),
        "model for another N": (
            ["--model", str(model_dir), "--env-id", "jmsra_env/JMSRA-N8-Box-v1"], "trained for N = 4 agents"
        ),
        "cuda without CUDA": (["--device", "cuda"], "CUDA is not available"),
        "out below a file": (["--out", "BLOCKER/out"], "cannot be written"),
        "out holding other files": (["--out", "FOREIGN"], "holds files evaluate.py does not write"),
    }


@pytest.mark.parametrize("case", list(_bad_cases(None)))
def test_bad_input_is_a_clear_error_and_leaves_earlier_results_alone(case, tmp_path, capsys, request, monkeypatch):
    model_dir = request.getfixturevalue("tiny_model") if "model for" in case else None
    argv, message = _bad_cases(model_dir)[case]
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("earlier result\n")
    (out / "sweep_bandwidth.csv").write_text("earlier sweep\n")
    if case == "out holding other files":
        (out / "thesis.tex").write_text("not ours\n")
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    if case == "cuda without CUDA":
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = _snapshot(out)
    argv = [a.replace("BLOCKER", str(tmp_path / "blocker")).replace("FOREIGN", str(out)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    assert evaluate.main([*argv, "--episodes", "1", *SHORT]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "out"]  # no staging folder left


def test_help_lists_the_sweeps_and_outputs(capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--sweep", "--model", "--policies", "summary.csv", "bandwidth", "kv-bits", "byte-identical"):
        assert word in text


# -- interrupted: one line, exit 130 / 143, earlier results intact, no staging folder left -------


def _earlier(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("earlier result\n")
    return out


@pytest.mark.parametrize("signum, status", [(2, 130), (15, 143)])
def test_a_signal_during_an_evaluation_exits_with_one_line_and_leaves_results_alone(
        tmp_path, capsys, monkeypatch, signum, status):
    import os

    out = _earlier(tmp_path)
    before = _snapshot(out)

    def signalled(*a, **k):
        os.kill(os.getpid(), signum)  # the real signal, through the real handler
        raise AssertionError("the signal did not stop the evaluation")

    monkeypatch.setattr(evaluate, "_run_evaluation", signalled)
    assert evaluate.main(["--episodes", "1", "--out", str(out), *SHORT]) == status
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left
    import signal as _signal

    assert _signal.getsignal(_signal.SIGTERM) in (_signal.SIG_DFL, None)  # handlers restored


def test_ctrl_c_on_the_real_program_exits_130_without_a_traceback(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = _earlier(tmp_path)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(root / "evaluate.py"), "--episodes", "2000", "--out", str(out),
                             "--no-progress", "--no-plots"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.staging")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # into the evaluation
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "interrupted (SIGINT)" in err
    assert (out / "summary.csv").read_text() == "earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_staging_folders_of_killed_runs_are_cleaned_on_the_next_run(tmp_path):
    import os

    from jmsra_env.evaluation import report as rep

    out = _earlier(tmp_path)
    dead = tmp_path / ".out.999999999.x1y2.staging"  # no such pid
    dead.mkdir()
    (dead / "summary.csv").write_text("half")
    legacy_empty = tmp_path / ".out.abc123.staging"
    legacy_empty.mkdir()
    legacy_full = tmp_path / ".out.def456.staging"
    legacy_full.mkdir()
    (legacy_full / "x").write_text("?")
    live = tmp_path / f".out.{os.getppid()}.z9.staging"  # a live process's
    live.mkdir()
    other = tmp_path / ".other.999999999.q.staging"  # another --out's
    other.mkdir()
    assert evaluate.main(["--episodes", "1", "--policies", "jmsra", "--out", str(out), "--no-plots", *SHORT]) == 0
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["out", legacy_full.name, live.name, other.name])
    assert rep.clean_stale_staging(out) == []


def test_optimal_split_rows_for_models(tiny_model, tmp_path, capsys):
    """--optimal-split adds LABEL+split for each model: its media, the optimal split for them."""
    out = tmp_path / "ev"
    assert evaluate.main(["--model", f"tiny={tiny_model}", "--optimal-split", "--policies", "jmsra", "--episodes", "2",
                          "--out", str(out), "--no-plots", *SHORT]) == 0
    rows = {r["policy"]: r for r in json.loads((out / "summary.json").read_text())["policies"]}
    assert set(rows) == {"jmsra", "tiny", "tiny+split"}
    per_round = _read_csv(out / "rounds.csv")
    own = np.array([float(r["tiny"]) for r in per_round])
    split = np.array([float(r["tiny+split"]) for r in per_round])
    assert np.all(split <= own * (1 + 1e-9)) and split.mean() <= own.mean()
    for argv, flag in ([["--optimal-split"], "--model"], [["--optimal-split", "--sweep", "agents", "--model",
                                                          str(tiny_model)], "sweep"]):
        capsys.readouterr()
        assert evaluate.main([*argv, "--out", str(tmp_path / "x"), *SHORT]) == 2
        err = capsys.readouterr().err
        assert "--optimal-split" in err and flag in err and not (tmp_path / "x").exists()
