"""sweep.py / jmsra_agents.sweep: a tiny sweep on a local Ray instance, resume, report statistics, bad grids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jmsra_agents import sweep as sw
from jmsra_agents import sweep_report as sr

# Tiny trials: one 256-step rollout (2 envs x 128 steps), a small net, no evaluation callbacks.
TINY_TRAIN = ("--n-envs 2 --n-steps 128 --batch-size 128 --n-epochs 1 --net-arch 16,16 "
              "--eval-freq 0 --checkpoint-freq 0")
TINY = ["--env-ids", "jmsra_env/JMSRA-v0,jmsra_env/JMSRA-N8-v0", "--recipes", "ppo", "--seeds", "0..1",
        "--total-timesteps", "256", "--eval-episodes", "2", "--cpus-per-trial", "1", "--train-args", TINY_TRAIN,
        "--bootstrap-reps", "500", "--quiet"]


# ---------------------------------------------------------------------------------------------
# The sweep on Ray (one local instance for the module; the CLI reuses it and leaves it running)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def resumed_sweep(ray_local, tmp_path_factory):
    """A sweep interrupted after its first finished trial, then resumed to the end."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    rc_first = sw.main([*TINY, "--out", str(out), "--stop-after", "1"])
    finished = {}
    for run_json in (out / "runs").glob("*/run.json"):
        info = json.loads(run_json.read_text())
        if info["kind"] == "final" and _tune_finished(out, run_json.parent.name):
            finished[run_json.parent.name] = run_json.stat().st_mtime_ns
    report_after_first = (out / "report").exists()
    rc_resume = sw.main(["--resume", "--out", str(out), "--bootstrap-reps", "500", "--quiet"])
    return {"out": out, "rc_first": rc_first, "rc_resume": rc_resume, "finished_first": finished,
            "report_after_first": report_after_first}


def _tune_finished(out: Path, name: str) -> bool:
    """Tune recorded the trial's (single, final) result."""
    result = out / "tune" / sw.EXPERIMENT_NAME / name / "result.json"
    return result.exists() and result.stat().st_size > 0


def test_interrupted_sweep_stops_early_without_a_report(resumed_sweep):
    assert resumed_sweep["rc_first"] == 130
    assert 1 <= len(resumed_sweep["finished_first"]) < 4
    assert not resumed_sweep["report_after_first"]


def test_resume_runs_only_the_missing_trials(resumed_sweep):
    out = resumed_sweep["out"]
    assert resumed_sweep["rc_resume"] == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(c.name for c in sw.validate_grid(
        sw.grid_from_mapping(json.loads((out / sw.GRID_FILE).read_text()))))
    for name, mtime_ns in resumed_sweep["finished_first"].items():
        assert (out / "runs" / name / "run.json").stat().st_mtime_ns == mtime_ns, f"{name} was trained again"
    for run_json in (out / "runs").glob("*/run.json"):
        assert json.loads(run_json.read_text())["kind"] == "final"


def test_finished_sweep_writes_the_report_per_scenario(resumed_sweep):
    report = resumed_sweep["out"] / "report"
    for scenario in ("JMSRA", "JMSRA-N8"):
        for suffix in (".csv", ".md", ".png", "_curves.csv", "_curves.png"):
            assert (report / f"{scenario}{suffix}").stat().st_size > 0
        rows = (report / f"{scenario}.csv").read_text().splitlines()
        policies = [r.split(",")[1] for r in rows[1:]]
        assert policies == ["ppo", "jmsra", "nl-only", "kv-only"]
        ppo = dict(zip(rows[0].split(","), rows[1].split(",")))
        assert ppo["seeds"] == "2"
        assert float(ppo["ci95_low_s"]) <= float(ppo["iqm_latency_s"]) <= float(ppo["ci95_high_s"])
    assert len((report / "trials.csv").read_text().splitlines()) == 1 + 4
    assert (report / "all_scenarios.csv").read_text().splitlines()[1].startswith("ppo,2,2,")
    assert not list(report.parent.glob(".report.*"))  # no temporary folder left behind


def test_every_trial_run_dir_loads_in_evaluate_py(resumed_sweep, tmp_path):
    import evaluate

    for run_dir in sorted((resumed_sweep["out"] / "runs").iterdir()):
        rc = evaluate.main(["--model", str(run_dir), "--episodes", "1", "--policies", "jmsra",
                            "--out", str(tmp_path / run_dir.name), "--no-plots", "--no-progress"])
        assert rc == 0, run_dir


def test_trial_latency_matches_a_separate_evaluation_of_its_model(resumed_sweep):
    from jmsra_env import evaluation as ev

    row = (resumed_sweep["out"] / "report" / "trials.csv").read_text().splitlines()
    header, first = row[0].split(","), row[1].split(",")
    trial = dict(zip(header, first))
    from jmsra_agents.evaluation import load_model_policy

    policy = load_model_policy(trial["run_dir"])
    cfg, _ = ev.scenario_from_env_id("jmsra_env/JMSRA-v0" if trial["scenario"] == "JMSRA" else "jmsra_env/JMSRA-N8-v0")
    (res,) = ev.evaluate_policies(ev.draw_rounds(cfg, 2, sw.DEFAULT_EVAL_SEED), [policy], single_round_budget_s=0)
    assert float(trial["mean_latency_s"]) == pytest.approx(float(res.latency_s.mean()), rel=1e-6)


def test_report_only_rewrites_the_same_report_from_tunes_state(resumed_sweep, monkeypatch):
    report = resumed_sweep["out"] / "report"
    before = {p.name: p.read_bytes() for p in report.iterdir() if p.suffix in (".csv", ".md")}
    monkeypatch.setattr(sw, "_init_ray", None)  # no Ray needed: Tune's state is read from files
    assert sw.main(["--report-only", "--out", str(resumed_sweep["out"]), "--bootstrap-reps", "500"]) == 0
    assert {name: (report / name).read_bytes() for name in before} == before


def test_new_sweep_into_a_finished_sweeps_folder_is_refused(resumed_sweep, capsys):
    assert sw.main([*TINY, "--out", str(resumed_sweep["out"])]) == 2
    assert "--resume" in capsys.readouterr().err


def test_failed_trial_is_reported_with_a_resume_hint(ray_local, tmp_path, capsys, monkeypatch):
    # --n-envs 0 is refused before Ray starts (below); a failure only a trial meets (a full disk, a
    # lost worker) is simulated by switching that driver-side check off: the trial, in its Ray
    # worker, runs train.py's checks, fails, and the sweep says so.
    monkeypatch.setattr(sw, "_check_train_values", lambda *a: None)
    argv = ["--env-ids", "jmsra_env/JMSRA-v0", "--seeds", "0", "--total-timesteps", "256", "--quiet",
            "--train-args", TINY_TRAIN + " --n-envs 0", "--out", str(tmp_path / "out")]
    assert sw.main(argv) == 1
    err = capsys.readouterr().err
    assert "failed: JMSRA-ppo-seed0" in err and "train.py refused" in err and "--resume" in err
    assert not (tmp_path / "out" / "report").exists()


# ---------------------------------------------------------------------------------------------
# Bad grids: a clear error before Ray starts


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("Ray was started for a bad grid")

    monkeypatch.setattr(sw, "_init_ray", refuse)


def _grid_file(tmp_path, text: str) -> str:
    p = tmp_path / "grid.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('env_ids = ["jmsra_env/JMSRA-v0"]\nseed = [0, 1]\n', "unknown key(s) ['seed']"),
        ('env_ids = ["jmsra_env/JMSRA-N9-v0"]\n', "unknown environment id 'jmsra_env/JMSRA-N9-v0'"),
        ('env_ids = ["jmsra_env/JMSRA-v0"]\nseeds = []\n', "seed list is empty"),
        ('env_ids = ["jmsra_env/JMSRA-v0"]\nrecipes = ["sac"]\n', "unknown recipe 'sac'"),
        ('env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlearning_rat = [1e-4]\n', "'learning_rat' is not a train.py flag"),
        ('env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nn_steps = ["many"]\n', "train.py refuses its flags"),
        ('env_ids = ["jmsra_env/JMSRA-v0"]\ntrain_args = "--seed 3"\n', "set by the sweep itself"),
        ('env_ids = ["jmsra_env/JMSRA-v0"\n', "is not valid TOML"),
    ],
    ids=["unknown-key", "unknown-env-id", "empty-seeds", "unknown-recipe", "unknown-hyperparameter",
         "bad-hyperparameter-value", "sweep-owned-flag", "not-toml"],
)
def test_bad_grid_file_is_refused_before_ray_starts(tmp_path, capsys, no_ray, toml, expected):
    out = tmp_path / "out"
    assert sw.main(["--grid", _grid_file(tmp_path, toml), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_empty_seed_flag_is_refused_before_ray_starts(tmp_path, capsys, no_ray):
    assert sw.main(["--env-ids", "jmsra_env/JMSRA-v0", "--seeds", "", "--out", str(tmp_path / "o")]) == 2
    assert "seed list is empty" in capsys.readouterr().err


def test_grid_file_with_flags_builds_the_cartesian_product(tmp_path):
    text = ('env_ids = ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-N8-Box-v1"]\nrecipes = ["ppo", "bc+ppo"]\n'
            'seeds = "0..2"\n[hyperparams]\nlearning_rate = [3e-4, 1e-4]\n')
    args = sw.build_parser().parse_args(["--grid", _grid_file(tmp_path, text), "--seeds", "5,7", "--out", "x"])
    cells = sw.validate_grid(sw._grid_from_args(args))
    assert len(cells) == 2 * 2 * 2 * 2
    assert {c.seed for c in cells} == {5, 7}
    assert cells[0].name == "JMSRA-ppo-learning_rate=0.0003-seed5"
    assert {c.scenario for c in cells} == {"JMSRA", "JMSRA-N8"}


def test_grid_file_in_the_docs_is_valid():
    import re
    import tomllib

    doc = (Path(__file__).resolve().parent.parent / "docs" / "sweeps.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", doc, re.S)
    cells = sw.validate_grid(sw.grid_from_mapping(tomllib.loads(block)))
    assert len(cells) == 2 * 2 * 10 * 2 * 2  # scenarios x recipes x seeds x learning rates x n_steps


def test_hp_flag_values_with_commas_are_separated_by_semicolons():
    args = sw.build_parser().parse_args(["--env-ids", "jmsra_env/JMSRA-v0", "--hp", "net_arch=64,64;256,256",
                                          "--hp", "learning_rate=3e-4,1e-4", "--out", "x"])
    grid = sw._grid_from_args(args)
    assert dict(grid.hyperparams) == {"net_arch": ("64,64", "256,256"), "learning_rate": (3e-4, 1e-4)}
    assert len(sw.validate_grid(grid)) == 4 * 5


@pytest.mark.parametrize(("spec", "seeds"), [("0..3", (0, 1, 2, 3)), ("0,2,5..6", (0, 2, 5, 6)), ([1, "3..4"], (1, 3, 4)), (7, (7,))])
def test_seed_specs_expand_to_seed_lists(spec, seeds):
    assert sw.parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["", "3..1", "a", "1,1", []])
def test_bad_seed_specs_are_refused(spec):
    with pytest.raises(sw.SweepError, match="seeds"):
        sw.parse_seeds(spec)


def test_train_argv_applies_recipe_and_hyperparameters():
    cell = sw.TrialCell("jmsra_env/JMSRA-v0", "ppo", 3, (("learning_rate", 1e-4),), 1000)
    argv = sw.train_argv(cell, Path("/x/runs/name"))
    assert argv[argv.index("--bc-steps") + 1] == "0"
    assert argv[argv.index("--learning-rate") + 1] == "0.0001"
    assert argv[argv.index("--logdir") + 1] == "/x/runs" and argv[argv.index("--run-name") + 1] == "name"
    assert "--bc-steps" not in sw.train_argv(sw.TrialCell("jmsra_env/JMSRA-v0", "bc+ppo", 3), Path("/x/r/n"))


# ---------------------------------------------------------------------------------------------
# Statistics and the report (no Ray)

# Per-seed latencies (s); sorted: 0.2 0.9 1.0 1.1 | 1.2 1.3 1.4 5.0 -> the middle half 1.0..1.3.
SCORES = [0.9, 1.3, 1.0, 5.0, 1.1, 1.2, 0.2, 1.4]
JMSRA = 1.05


def test_iqm_row_matches_hand_computation():
    (row, *experts) = sr.aggregate_scenario("S", {"ppo": SCORES}, {"jmsra": JMSRA, "nl-only": 2.1}, reps=1000, seed=0)
    iqm = (1.0 + 1.1 + 1.2 + 1.3) / 4
    assert row["iqm_latency_s"] == pytest.approx(iqm)
    assert row["mean_latency_s"] == pytest.approx(np.mean(SCORES))
    assert row["gap_to_jmsra_pct"] == pytest.approx(100 * (iqm / JMSRA - 1))
    assert row["p_improvement_over_jmsra"] == pytest.approx(3 / 8)  # 0.2, 0.9, 1.0 beat 1.05
    assert 0.2 <= row["ci95_low_s"] < iqm < row["ci95_high_s"] <= 5.0
    assert row["gap_ci95_low_pct"] == pytest.approx(100 * (row["ci95_low_s"] / JMSRA - 1))
    assert [e["policy"] for e in experts] == ["jmsra", "nl-only"]
    assert experts[1]["gap_to_jmsra_pct"] == pytest.approx(100.0)


def test_probability_of_improvement_counts_ties_as_half():
    (row, _) = sr.aggregate_scenario("S", {"ppo": [1.0, 2.0]}, {"jmsra": 1.0}, reps=200, seed=0)
    assert row["p_improvement_over_jmsra"] == pytest.approx(0.25)


def test_bootstrap_resamples_within_each_task():
    # Task 0 scores all 0, task 1 all 100: a stratified resample always has a mean of exactly 50.
    scores = np.array([[0.0, 100.0]] * 5)
    lo, hi = sr.stratified_bootstrap_ci(scores, np.mean, reps=500, rng=np.random.default_rng(1))
    assert lo == hi == 50.0


def _fake_results(curve_steps=(256, 512)):
    cells = sw.SweepGrid(("jmsra_env/JMSRA-v0",), ("ppo", "bc+ppo"), tuple(range(8))).cells()
    results = {}
    for i, c in enumerate(cells):
        lat = SCORES[c.seed] + (0.5 if c.recipe == "ppo" else 0.0)
        results[c.name] = sw.TrialResult(
            c.name, c.env_id, c.scenario, c.recipe, c.variant, c.seed, f"/runs/{c.name}", lat, (lat, lat), 0.5, 0.0,
            512, 1.0, 0.1, {sr.CURVE_TAG: tuple((s, 100.0 / (1 + s * (1 + c.seed) / 512)) for s in curve_steps)},
        )
    return cells, results


def test_same_inputs_give_the_same_report():
    cells, results = _fake_results()
    experts = {"JMSRA": {"jmsra": JMSRA, "nl-only": 2.0, "kv-only": 3.0}}
    a = sr.build_report(cells, results, experts=experts, reps=500, seed=3)
    b = sr.build_report(cells, results, experts=experts, reps=500, seed=3)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    c = sr.build_report(cells, results, experts=experts, reps=500, seed=4)
    assert c["JMSRA.csv"] != a["JMSRA.csv"]  # the seed does reach the bootstrap


def test_report_lists_missing_trials_and_aggregates_the_rest():
    cells, results = _fake_results()
    del results[cells[0].name]
    files = sr.build_report(cells, results, experts={"JMSRA": {"jmsra": 1.0}}, reps=200, plots=False)
    assert cells[0].name in files["summary.md"]
    assert json.loads(files["report.json"])["missing_trials"] == [cells[0].name]
    assert files["JMSRA.csv"].splitlines()[1].split(",")[3] == "7"  # ppo: 7 of 8 seeds


def test_across_scenarios_aggregates_gaps_over_seeds_and_scenarios():
    # Two scenarios, four seeds; seed 3 is missing in scenario B, so only seeds 0..2 count.
    gaps = {"ppo": {"A": {0: 1.0, 1: 2.0, 2: -3.0, 3: 50.0}, "B": {0: 4.0, 1: -1.0, 2: 6.0}}}
    (row,) = sr.aggregate_across_scenarios(gaps, reps=500, seed=0)
    # 6 values sorted: -3 | -1 1 2 4 | 6 -> the 25 % trimmed mean drops one value at each end.
    assert row["seeds"] == 3 and row["scenarios"] == 2
    assert row["iqm_gap_to_jmsra_pct"] == pytest.approx((-1 + 1 + 2 + 4) / 4)
    assert row["p_improvement_over_jmsra"] == pytest.approx((1 / 3 + 1 / 3) / 2)  # one seed below 0 in each
    assert row["ci95_low_pct"] <= row["iqm_gap_to_jmsra_pct"] <= row["ci95_high_pct"]


def test_learning_curve_is_the_mean_over_seeds_with_a_band():
    curves = [((0, 1.0), (10, 3.0)), ((0, 3.0), (10, 5.0), (20, 9.0))]
    steps, mean, lo, hi = sr.learning_curve(curves, reps=500, rng=np.random.default_rng(0))
    assert steps.tolist() == [0, 10]  # the steps every seed logged
    assert mean.tolist() == [2.0, 4.0]
    assert np.all(lo <= mean) and np.all(mean <= hi) and np.all(lo >= [1.0, 3.0]) and np.all(hi <= [3.0, 5.0])


def test_report_folder_is_replaced_whole(tmp_path):
    sr.write_report(tmp_path / "report", {"a.csv": "1\n", "b.md": "x\n"})
    sr.write_report(tmp_path / "report", {"a.csv": "2\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["a.csv"]
    assert (tmp_path / "report" / "a.csv").read_text() == "2\n"


def test_a_finished_trial_run_again_returns_its_saved_result_without_training(resumed_sweep, monkeypatch):
    out = resumed_sweep["out"]
    cell = sw.validate_grid(sw.grid_from_mapping(json.loads((out / sw.GRID_FILE).read_text())))[0]
    run_dir = out / "runs" / cell.name
    saved = json.loads((run_dir / sw.TRIAL_RESULT_FILE).read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(sw, "train_step", no_training)
    assert sw.run_trial(cell, run_dir).to_dict() == sw.TrialResult.from_dict(saved["result"]).to_dict()
    other = dataclasses.replace(cell, seed=cell.seed + 100)
    with pytest.raises(AssertionError, match="trained again"):
        sw.run_trial(other, run_dir)  # another cell's saved result is not reused


# ---------------------------------------------------------------------------------------------
# Issue 19: every grid value and flag checked before Ray starts; --out locked and never foreign


@pytest.mark.parametrize(("toml", "expected"), [
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n# caf\xe9 in Latin-1\n', "is not UTF-8 text"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\ntrain_args = "--n-envs \'4"\n', "train_args: cannot split"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlearning_rate = [nan]\n', "is not a finite number"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlearning_rate = [inf, 1e-4]\n', "is not a finite number"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlearning_rate = ["nan"]\n', "is not a finite number"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlearning_rate = [{a = 1}]\n', "expected numbers or strings"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nlog_std_init = [1e300]\n', "--log-std-init must be"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\n[hyperparams]\nnet_arch = ["100000000,100000000"]\n', "--net-arch must be"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\ntrain_args = "--n-envs 0"\n', "--n-envs must be"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\ntrain_args = "--target-kl -1"\n', "--target-kl must be"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\ntrain_args = "--bc-steps 5 --bc-expert nosuch"\n', "--bc-expert"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\nseeds = "0..100000000"\n', "at most 10,000 per sweep"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\nseeds = [99999999999]\n', "above the largest seed"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\nseeds = "0..4999"\n[hyperparams]\nn_epochs = [1, 2, 3]\n',
     "the grid has 15,000 trials; at most 10,000"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\ntotal_timesteps = 100000000000000000000\n', "total_timesteps"),
    (b'env_ids = ["jmsra_env/JMSRA-v0"]\neval_episodes = 1e9\n', "eval_episodes"),
    (b'x = ' + b'[' * 5000 + b']' * 5000 + b'\n', "grid file"),
])
def test_a_hostile_grid_is_refused_in_one_line_before_ray_starts(tmp_path, capsys, no_ray, toml, expected):
    import time

    p = tmp_path / "grid.toml"
    p.write_bytes(toml)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert sw.main(["--grid", str(p), "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--hp", "learning_rate=nan"], "is not a finite number"),
    (["--train-args", "--net-arch '64"], "train_args: cannot split"),
    (["--seeds", "0..100000000"], "at most 10,000 per sweep"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number"),
    (["--gpus-per-trial", "inf"], "--gpus-per-trial must be a finite number"),
    (["--bootstrap-reps", "1000000000"], "--bootstrap-reps must be in"),
    (["--bootstrap-seed", "-1"], "--bootstrap-seed must be in"),
    (["--total-timesteps", "0"], "total_timesteps"),
    (["--out", ""], "--out must be a folder path"),
])
def test_hostile_flags_are_refused_before_ray_starts(tmp_path, capsys, no_ray, flags, expected):
    out = tmp_path / "out"
    argv = ["--env-ids", "jmsra_env/JMSRA-v0", "--out", str(out), *flags]
    assert sw.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_non_empty_folder_that_is_not_a_sweep_is_refused_and_untouched(tmp_path, capsys, no_ray):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    assert sw.main(["--env-ids", "jmsra_env/JMSRA-v0", "--out", str(out)]) == 2
    assert "is not empty and is not a sweep of this tool" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    (tmp_path / "afile").write_text("x")
    assert sw.main(["--env-ids", "jmsra_env/JMSRA-v0", "--out", str(tmp_path / "afile")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert sw.main(["--resume", "--out", str(out)]) == 2
    assert "grid.json is missing" in capsys.readouterr().err


def test_a_second_sweep_into_a_locked_out_is_refused(tmp_path, capsys, no_ray):
    import os

    out = tmp_path / "out"
    out.mkdir()
    grid = sw.grid_from_mapping({"env_ids": ["jmsra_env/JMSRA-v0"], "seeds": [0]})
    (out / sw.GRID_FILE).write_text(json.dumps(grid.to_dict()))
    fd = sw._lock_out(out)  # a running sweep holds it
    try:
        assert sw.main(["--resume", "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "in use by a running sweep" in err and f"pid {os.getpid()} on" in err
        assert sorted(p.name for p in out.iterdir()) == [sw.LOCK_FILE, sw.GRID_FILE]
    finally:
        os.close(fd)


def test_a_sweep_lock_alone_does_not_make_a_folder_foreign(tmp_path, no_ray):
    out = tmp_path / "out"
    out.mkdir()
    (out / sw.LOCK_FILE).write_text("")
    args = sw.build_parser().parse_args(["--env-ids", "jmsra_env/JMSRA-v0", "--out", str(out)])
    assert sw._check_out(args) == out.resolve()


def test_a_huge_seed_range_is_refused_without_being_expanded():
    import time

    t0 = time.perf_counter()
    with pytest.raises(sw.SweepError, match="at most 10,000"):
        sw.parse_seeds("0..100000000")
    with pytest.raises(sw.SweepError, match="above the largest seed"):
        sw.parse_seeds("0..100000000000000000000")
    assert time.perf_counter() - t0 < 0.1
    assert len(sw.parse_seeds("0..9999")) == 10_000
