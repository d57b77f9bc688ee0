"""Evaluation of session scenarios: whole episodes rolled per policy in the session environment,
common exogenous rounds, evictions and pool usage, the session experts, ``--sweep pool``."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import evaluation as ev
from jmsra_env.policies import make_policy
from jmsra_env.session_experts import SESSION_EXPERT_NAMES

from jmsra_agents import cli_evaluate as evaluate

SESSION_ID = "jmsra_env/JMSRA-Session-v0"
MIB = 2**20
# A small pool (32 MiB per agent) so that myopic JMSRA evicts within a dozen rounds.
TIGHT = {"episode_rounds": 12, "session.kv_pool_bytes": 4 * 32 * MIB}
EPISODES, SEED = 2, 5


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@functools.lru_cache(maxsize=None)
def _stepped(name: str) -> dict[str, np.ndarray]:
    """Expert ``name`` stepped in the real session env, episode e from ``reset(seed=SEED + e)``."""
    env = gym.make(SESSION_ID, config=dict(TIGHT))
    policy = make_policy(name, env)
    out: dict[str, list] = {"latency_s": [], "evictions": [], "kv_pool_used_fraction": [], "reward": []}
    for e in range(EPISODES):
        obs, _ = env.reset(seed=SEED + e)
        for _ in range(TIGHT["episode_rounds"]):
            obs, reward, _, _, info = env.step(policy.predict(obs)[0])
            out["reward"].append(reward)
            for k in ("latency_s", "evictions", "kv_pool_used_fraction"):
                out[k].append(info[k])
    return {k: np.asarray(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _rolled(name: str) -> ev.PolicyResult:
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, TIGHT)
    return ev.rollout_episodes(cfg, ev.session_expert(name, cfg), EPISODES, SEED)


@pytest.mark.parametrize("name", SESSION_EXPERT_NAMES)
def test_session_rollout_equals_stepping_the_session_env(name):
    stepped, rolled = _stepped(name), _rolled(name)
    np.testing.assert_array_equal(rolled.latency_s, stepped["latency_s"])
    np.testing.assert_array_equal(-rolled.latency_s, stepped["reward"])


def test_myopic_jmsra_evicts_on_the_tight_test_pool():
    # (so that the eviction checks below compare non-zero counts)
    assert _stepped("jmsra")["evictions"].sum() > 0


@pytest.mark.parametrize("name", ["jmsra", "kv-only"])
def test_evictions_and_pool_usage_columns_equal_the_env_info(name):
    stepped = _stepped(name)
    (row,) = ev.summarise([_rolled(name)])
    assert row["evictions_per_episode"] == pytest.approx(stepped["evictions"].sum() / EPISODES, abs=0)
    assert row["pool_used_fraction"] == pytest.approx(stepped["kv_pool_used_fraction"].mean(), rel=1e-12)
    np.testing.assert_array_equal(_rolled(name).info["evictions"], stepped["evictions"])


class _Recorder:
    """Wraps a policy and records what it observes (exogenous and receiver keys)."""

    kind = "test"

    def __init__(self, policy):
        self.policy, self.label, self.seen = policy, policy.label, []

    def decide(self, obs):
        self.seen.append({k: np.array(obs[k]) for k in ("snr_db", "load", "new_tokens", "context_tokens",
                                                       "kv_resident_tokens")})
        return self.policy.decide(obs)


def test_every_policy_meets_the_same_exogenous_rounds_with_its_own_receiver():
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, TIGHT)
    a, b = _Recorder(ev.session_expert("kv-only", cfg)), _Recorder(ev.session_expert("nl-only", cfg))
    ev.evaluate_scenario(cfg, [a, b], EPISODES, SEED)
    for sa, sb in zip(a.seen, b.seen):
        for key in ("snr_db", "load", "new_tokens", "context_tokens"):
            np.testing.assert_array_equal(sa[key], sb[key])
    assert any(sa["kv_resident_tokens"].sum() > 0 for sa in a.seen)  # KV-only's receiver holds caches
    assert all(sb["kv_resident_tokens"].sum() == 0 for sb in b.seen)  # NL-only's never does


def test_a_policys_latency_does_not_depend_on_the_other_policies_evaluated():
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, TIGHT)
    alone = ev.evaluate_scenario(cfg, [ev.session_expert("nl-only", cfg)], EPISODES, SEED)
    together = ev.evaluate_scenario(cfg, [ev.session_expert(n, cfg) for n in ("kv-only", "jmsra", "nl-only")],
                                    EPISODES, SEED)
    np.testing.assert_array_equal(alone[0].latency_s, together[2].latency_s)


def test_batched_session_vector_env_rollout_of_one_episode_is_the_single_env_episode():
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, TIGHT)
    for name in ("jmsra", "clairvoyant"):
        vec = ev.rollout_episodes(cfg, ev.session_expert(name, cfg), 1, SEED, vectorization="vector")
        np.testing.assert_array_equal(vec.latency_s, _stepped(name)["latency_s"][: TIGHT["episode_rounds"]])


def test_clairvoyant_refuses_rounds_drawn_once():
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, TIGHT)
    clairvoyant = ev.session_expert("clairvoyant", cfg)
    assert clairvoyant.kind == "bound"
    with pytest.raises(ev.EvaluationError, match="true future rounds"):
        clairvoyant.decide({})


def test_evaluate_py_on_a_session_id_rolls_the_session_experts(tmp_path):
    argv = ["--env-id", SESSION_ID, "--episodes", "2", "--config", "episode_rounds=8", "--no-plots",
            "--no-progress", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 0
    rows = _read_csv(tmp_path / "summary.csv")
    assert [r["policy"] for r in rows] == list(SESSION_EXPERT_NAMES)
    cfg, _ = ev.scenario_from_env_id(SESSION_ID, {"episode_rounds": 8})
    lookahead = ev.rollout_episodes(cfg, ev.session_expert("lookahead", cfg), 2, ev.DEFAULT_SEED)
    (expected,) = ev.summarise([lookahead])
    got = next(r for r in rows if r["policy"] == "lookahead")
    for key in ("mean_latency_s", "evictions_per_episode", "pool_used_fraction", "kv_share"):
        assert float(got[key]) == pytest.approx(expected[key], rel=1e-8, abs=1e-12), key


def test_single_round_summary_csv_has_no_session_columns(tmp_path):
    assert evaluate.main(["--policies", "jmsra", "--episodes", "2", "--config", "episode_rounds=8",
                          "--no-plots", "--no-progress", "--out", str(tmp_path)]) == 0
    header = (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert header == ",".join(ev.SUMMARY_COLUMNS)


def test_sweep_pool_rolls_episodes_per_pool_size(tmp_path):
    argv = ["--sweep", "pool", "--sweep-values", "32,1024", "--policies", "nl-only,jmsra,pool-aware",
            "--episodes", "2", "--config", "episode_rounds=12", "--no-progress", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 0
    rows = _read_csv(tmp_path / "sweep_pool.csv")
    assert [(r["value"], r["policy"]) for r in rows] == [
        (v, p) for v in ("32", "1024") for p in ("nl-only", "jmsra", "pool-aware")
    ]
    ev_per = {(r["value"], r["policy"]): float(r["evictions_per_episode"]) for r in rows}
    assert ev_per[("32", "jmsra")] > 0 and ev_per[("1024", "jmsra")] == 0 and ev_per[("32", "pool-aware")] == 0
    lat = {(r["value"], r["policy"]): float(r["mean_latency_s"]) for r in rows}
    assert lat[("32", "nl-only")] == lat[("1024", "nl-only")]  # NL-only never uses the pool
    assert (tmp_path / "sweep_pool.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_pool_defaults_to_the_session_scenario():
    plan = evaluate._prepare(evaluate.build_parser().parse_args(["--sweep", "pool"]))
    assert plan["env_id"] == ev.DEFAULT_SESSION_ENV_ID and plan["cfg"].session.enabled


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sweep", "pool", "--env-id", "jmsra_env/JMSRA-v0"], "needs a session scenario"),
        (["--env-id", SESSION_ID, "--oracle"], "clairvoyant"),
        (["--env-id", SESSION_ID, "--policies", "optimal"], "session scenario"),
        (["--sweep", "pool", "--policies", "optimal"], "session scenario"),
    ],
)
def test_bad_session_evaluation_input_exits_2_naming_the_problem(argv, message, tmp_path, capsys):
    assert evaluate.main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_training_comparison_on_a_session_id_rolls_whole_episodes():
    from jmsra_agents.evaluation import compare_with_experts

    res = compare_with_experts("jmsra_env/JMSRA-Session-Box-v1", dict(TIGHT), [], experts=("jmsra",),
                               episodes=EPISODES, seed=SEED)
    np.testing.assert_array_equal(res.results[0].latency_s, _stepped("jmsra")["latency_s"])
    assert res.row("jmsra")["evictions_per_episode"] == _stepped("jmsra")["evictions"].sum() / EPISODES


class _RandomSplit:
    """Random media and a random split: a policy whose split P2 can improve."""

    label, kind = "random-split", "expert"

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def reset(self, config, seed=None):
        self.rng = np.random.default_rng(seed)

    def decide(self, obs):
        shape = np.shape(obs["snr_db"])
        return self.rng.integers(0, 2, shape).astype(np.int8), 1e6 * self.rng.random(shape) + 1.0


@pytest.mark.parametrize("env_id", ["jmsra_env/JMSRA-Session-TightPool-v0", "jmsra_env/JMSRA-StaleCSI-v0"])
def test_optimal_split_keeps_the_media_and_never_costs_more(env_id):
    """``OptimalSplit``: the same media round by round (so the same session episodes), and every
    round charged at most what the policy's own split is charged, on the rounds it observed."""
    cfg, _ = ev.scenario_from_env_id(env_id, {"episode_rounds": 12})
    own, split = ev.evaluate_scenario(cfg, [_RandomSplit(), ev.OptimalSplit(_RandomSplit(), cfg)], 4, 20000)
    assert split.label == "random-split+split"
    np.testing.assert_array_equal(split.media, own.media)
    if cfg.csi_delay == 0:  # P2 on the very terms charged: never worse, round by round
        assert np.all(split.latency_s <= own.latency_s * (1 + 1e-9))
    assert split.latency_s.mean() < 0.9 * own.latency_s.mean()
