"""Off-the-shelf learning on the Box form: Stable-Baselines3 with default hyperparameters.

Each algorithm (PPO, SAC, TD3) is trained with SB3's defaults except ``gamma = 0`` (the rounds are
a contextual bandit), on CPU with one torch thread, then its deterministic policy is charged on
held-out episodes (seeds 20000+) next to JMSRA on the same rounds. Two setups:

* ``raw``: ``gym.make("jmsra_env/JMSRA-Box-v1")`` as is (``MultiInputPolicy`` on the Dict
  observation, the Box action form);
* ``options``: ``gym.make("jmsra_env/JMSRA-Box-v1", features="physics",
  action_encoding="deadline")`` (``MlpPolicy``);
* ``solved``: ``features="physics", action_encoding="solved"`` (the split is (P2)'s optimum for
  the chosen media, perturbed by the action: the policy learns the media selection).

Prints, per run, the steps trained (a run stops early at ``--max-minutes``), the mean latency as
a ratio to JMSRA's on the same rounds, and the capped-round rate (evaluation and training)::

    python benchmarks/bench_offtheshelf.py --algos ppo sac --setups options --timesteps 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np

import jmsra_env  # noqa: F401 - registers the IDs

ALGOS = ("ppo", "sac", "td3")
SETUPS = {
    "raw": {},
    "options": {"features": "physics", "action_encoding": "deadline"},
    "solved": {"features": "physics", "action_encoding": "solved"},
}
ENV_ID = "jmsra_env/JMSRA-Box-v1"


class _Recorder(gym.Wrapper):
    """Counts training rounds and capped ones."""

    def __init__(self, env):
        super().__init__(env)
        self.rounds = self.capped = 0

    def step(self, action):
        out = self.env.step(action)
        self.rounds += 1
        self.capped += int(out[4]["capped"])
        return out


def _stop_after(minutes: float):
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAfter(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            return time.perf_counter() - self.t0 < 60.0 * minutes

    return StopAfter()


def evaluate(model, setup: str, episodes: int) -> dict[str, float]:
    """The deterministic policy and JMSRA on the same held-out rounds (seeds 20000+), through the
    one evaluation path (:func:`jmsra_agents.evaluation.compare_with_experts`)."""
    from jmsra_agents.evaluation import TrainedModelPolicy, compare_with_experts, live_model_policy
    from jmsra_env import evaluation as ev

    cfg, _ = ev.scenario_from_env_id(ENV_ID)
    opts = SETUPS[setup]
    if opts:
        policy = live_model_policy(model, None, cfg, opts["features"], opts["action_encoding"], label=setup)
    else:  # the Dict observation as is, the env's Box action
        policy = TrainedModelPolicy(model, cfg, setup)
    cmp = compare_with_experts(ENV_ID, None, [policy], experts=("jmsra",), episodes=episodes, seed=20_000)
    ours, ref = cmp.row(setup), cmp.row("jmsra")
    capped = next(r for r in cmp.results if r.label == setup).capped
    return {
        "latency_s": float(ours["mean_latency_s"]),
        "jmsra_latency_s": float(ref["mean_latency_s"]),
        "ratio_to_jmsra": float(ours["mean_latency_s"]) / float(ref["mean_latency_s"]),
        "eval_capped_rate": float(np.mean(capped)),
    }


def run(algo: str, setup: str, timesteps: int, max_minutes: float, episodes: int, seed: int) -> dict:
    import stable_baselines3
    import torch

    torch.set_num_threads(1)
    env = _Recorder(gym.make(ENV_ID, **SETUPS[setup]))
    policy = "MultiInputPolicy" if setup == "raw" else "MlpPolicy"
    model = getattr(stable_baselines3, algo.upper())(policy, env, gamma=0.0, seed=seed, device="cpu")
    t0 = time.perf_counter()
    model.learn(timesteps, callback=_stop_after(max_minutes))
    train_s = time.perf_counter() - t0
    out = {"algo": algo, "setup": setup, "steps": env.rounds, "train_s": round(train_s, 1),
           "train_capped_rate": env.capped / max(env.rounds, 1)}
    out.update(evaluate(model, setup, episodes))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--setups", nargs="+", choices=list(SETUPS), default=["raw", "options"])
    p.add_argument("--timesteps", type=int, default=200_000)
    p.add_argument("--max-minutes", type=float, default=float("inf"), help="stop each training run after this")
    p.add_argument("--episodes", type=int, default=16, help="held-out evaluation episodes (64 rounds each)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(f"{'algo':<5} {'setup':<8} {'steps':>8} {'train s':>8} {'latency/JMSRA':>14} "
          f"{'capped (eval)':>14} {'capped (train)':>15}")
    for setup in args.setups:
        for algo in args.algos:
            r = run(algo, setup, args.timesteps, args.max_minutes, args.episodes, args.seed)
            print(f"{algo:<5} {setup:<8} {r['steps']:>8} {r['train_s']:>8.0f} {r['ratio_to_jmsra']:>14.3f} "
                  f"{r['eval_capped_rate']:>14.4f} {r['train_capped_rate']:>15.4f}", flush=True)
            print("  " + json.dumps(r), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
