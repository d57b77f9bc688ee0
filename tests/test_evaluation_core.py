"""The evaluation core: import graph, one statistics function, rollouts, output folder, IDs, entry point."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_agents import cli_evaluate as evaluate
from jmsra_env import evaluation as ev
from jmsra_env.evaluation import report as rep
from jmsra_env.policies import ExpertPolicy

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--config", "episode_rounds=16", "--no-progress", "--episodes", "2"]
DETERMINISTIC = [n for n in ev.expert_names() if n != "random"]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_jmsra_env_imports_neither_agents_nor_torch():
    code = (
        "import pkgutil, importlib, sys, jmsra_env\n"
        # the TorchRL env subclasses torchrl's EnvBase: importing it is asking for torch
        "TORCH_ADAPTERS = ('jmsra_env.core.torchrl_env',)\n"
        "for m in pkgutil.walk_packages(jmsra_env.__path__, 'jmsra_env.'):\n"
        "    if m.name not in TORCH_ADAPTERS:\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('jmsra_agents', 'agents', 'torch', 'stable_baselines3'))\n"
        "assert len([n for n in sys.modules if n.startswith('jmsra_env.evaluation.')]) >= 4\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("env_id", ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-StaleCSI-v0"])
def test_rolling_episodes_gives_the_draw_once_latencies_for_the_experts(env_id):
    cfg, _ = ev.scenario_from_env_id(env_id, {"episode_rounds": 70})  # past the world's chunk
    rounds = ev.draw_rounds(cfg, 3, seed=4)
    policies = [ExpertPolicy(n, cfg) for n in DETERMINISTIC] + [ev.oracle_policy(cfg)]
    drawn = ev.evaluate_policies(rounds, policies, single_round_budget_s=0.0)
    for policy, once in zip(policies, drawn):
        rolled = ev.rollout_episodes(cfg, policy, 3, 4)
        np.testing.assert_array_equal(rolled.latency_s, once.latency_s, err_msg=policy.label)
        np.testing.assert_array_equal(rolled.capped, once.capped)
        np.testing.assert_array_equal(rolled.media, once.media)
        assert rolled.info["uncapped_latency_s"].shape == (3 * 70,)  # every other info field, per round


def test_batched_vector_env_rollout_of_one_episode_is_the_drawn_episode():
    cfg, _ = ev.scenario_from_env_id("jmsra_env/JMSRA-StaleCSI-v0", {"episode_rounds": 16})
    policy = ExpertPolicy("jmsra", cfg)
    (once,) = ev.evaluate_policies(ev.draw_rounds(cfg, 1, seed=9), [policy], single_round_budget_s=0.0)
    rolled = ev.rollout_episodes(cfg, policy, 1, 9, vectorization="vector")
    np.testing.assert_array_equal(rolled.latency_s, once.latency_s)
    many = ev.rollout_episodes(cfg, policy, 5, 9, vectorization="vector")
    assert many.latency_s.shape == (5 * 16,) and many.episodes == 5


def test_one_statistics_function_gives_training_and_evaluate_py_the_same_numbers(tmp_path):
    from jmsra_agents.evaluation import compare_with_experts

    assert evaluate.main(["--policies", "jmsra,nl-only,kv-only", "--no-plots", "--out", str(tmp_path), *SHORT]) == 0
    cli = {r["policy"]: r for r in _read_csv(tmp_path / "summary.csv")}
    res = compare_with_experts("jmsra_env/JMSRA-Box-v1", {"episode_rounds": 16}, [],
                               experts=("jmsra", "nl-only", "kv-only"), episodes=2, seed=ev.HELD_OUT_SEED)
    assert [r["policy"] for r in res.rows] == ["jmsra", "nl-only", "kv-only"]
    for row in res.rows:
        for key in ("mean_latency_s", "ci95_s", "p50_latency_s", "p95_latency_s", "gap_pct", "kv_share"):
            assert float(cli[row["policy"]][key]) == pytest.approx(row[key], rel=1e-8, abs=1e-12), key


def test_summarise_of_a_rollout_equals_summarise_of_the_drawn_rounds():
    cfg, _ = ev.scenario_from_env_id("jmsra_env/JMSRA-v0", {"episode_rounds": 8})
    policies = [ExpertPolicy("jmsra", cfg), ExpertPolicy("kv-only", cfg)]
    drawn = ev.evaluate_policies(ev.draw_rounds(cfg, 3, 1), policies, single_round_budget_s=0.0)
    rolled = [ev.rollout_episodes(cfg, p, 3, 1) for p in policies]
    assert ev.summarise(rolled) == ev.summarise(drawn)


def test_statistics_refuse_results_on_different_rounds():
    cfg, _ = ev.scenario_from_env_id("jmsra_env/JMSRA-v0", {"episode_rounds": 8})
    a = ev.rollout_episodes(cfg, ExpertPolicy("jmsra", cfg), 2, 1)
    b = ev.rollout_episodes(cfg, ExpertPolicy("nl-only", cfg), 3, 1)
    with pytest.raises(ev.EvaluationError, match="different rounds"):
        ev.summarise([a, b])


@pytest.mark.parametrize("trust", [False, True])
def test_evaluation_loads_models_safely_unless_pickles_are_trusted(monkeypatch, tmp_path, trust):
    from jmsra_agents import checkpoint, evaluation as aev

    seen = {}

    def loader(path, device="cpu", trust_pickle=False):
        seen["kwargs"] = {"device": device, "trust_pickle": trust_pickle}
        raise ValueError("stop here")

    monkeypatch.setattr(checkpoint, "load_trained_policy", loader)
    with pytest.raises(ev.EvaluationError, match="stop here"):
        aev.load_model_policy(tmp_path, trust_pickle=trust)
    assert seen["kwargs"] == {"device": "cpu", "trust_pickle": trust}


def _earlier_results(out: Path) -> dict[str, bytes]:
    assert evaluate.main(["--policies", "jmsra,nl-only", "--out", str(out), *SHORT, "--episodes", "1"]) == 0
    assert evaluate.main(["--sweep", "kv-bits", "--sweep-values", "4,8", "--policies", "jmsra", "--no-plots",
                          "--out", str(out), *SHORT, "--episodes", "1"]) == 0
    return _snapshot(out)


@pytest.mark.parametrize("failure", ["writing the third file", "swapping the folder in"])
def test_a_failure_half_way_leaves_the_previous_result_set_intact(failure, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    before = _earlier_results(out)
    assert {"summary.csv", "latency_cdf.png", "sweep_kv-bits.csv"} <= set(before)
    if failure == "writing the third file":
        calls = {"n": 0}
        real_fsync = os.fsync

        def fsync(fd):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(28, "No space left on device")
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_rename = os.rename

        def rename(src, dst):
            if str(src).endswith(".staging"):
                raise OSError(5, "Input/output error")
            real_rename(src, dst)

        monkeypatch.setattr(os, "rename", rename)
    argv = ["--policies", "jmsra,kv-only", "--seed", "3", "--out", str(out), *SHORT]
    assert evaluate.main(argv) == 1
    assert "earlier results are untouched" in capsys.readouterr().err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging or old folder left


def test_a_run_killed_between_the_two_renames_gets_its_previous_results_back(tmp_path):
    out = tmp_path / "results"
    before = _earlier_results(out)
    os.rename(out, tmp_path / ".results.12345.old")  # where commit() had moved them when killed
    rep.ResultFolder(out, rep.EVALUATION_FILES).abort()
    assert _snapshot(out) == before


def test_stale_files_of_the_same_result_set_are_removed_and_other_sets_kept(tmp_path, capsys):
    out = tmp_path / "results"
    before = _earlier_results(out)
    capsys.readouterr()
    assert evaluate.main(["--policies", "jmsra", "--no-plots", "--out", str(out), *SHORT]) == 0
    assert "removed stale latency_cdf.png, latency_bars.png" in capsys.readouterr().out.replace(
        "latency_bars.png, latency_cdf.png", "latency_cdf.png, latency_bars.png")
    after = _snapshot(out)
    assert "latency_cdf.png" not in after and "latency_bars.png" not in after
    assert after["sweep_kv-bits.csv"] == before["sweep_kv-bits.csv"]  # another result set: kept
    assert [r["policy"] for r in _read_csv(out / "summary.csv")] == ["jmsra"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_shim_and_the_console_entry_point_run_the_same_cli(tmp_path):
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["jmsra-evaluate"] == "jmsra_agents.cli_evaluate:main"
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--help"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert "--trust-pickle" in out.stdout and "--sweep" in out.stdout


def test_seeds_are_defined_once_and_held_out_from_model_selection():
    from jmsra_agents.callbacks import JMSRAEvalCallback
    import inspect

    seeds = inspect.signature(JMSRAEvalCallback).parameters["seeds"].default
    assert seeds[0] == ev.SELECTION_SEED and ev.DEFAULT_SEED == ev.HELD_OUT_SEED
    assert ev.TRAIN_SEED < ev.SELECTION_SEED < ev.HELD_OUT_SEED
    assert evaluate.build_parser().get_default("seed") == ev.HELD_OUT_SEED
