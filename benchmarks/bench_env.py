"""Environment throughput, each figure next to a reference measured in the same run.

    python benchmarks/bench_env.py            # all sections (about a minute on 2 cores)
    python benchmarks/bench_env.py --only a   # single env only (a), vector env (b), PPO (c)
    python benchmarks/bench_env.py --quick    # fewer steps, for a smoke test

(a) single environment: ``gym.make("jmsra_env/JMSRA-v0")`` with its default wrappers stepping a
    fixed valid action (equal split, all NL), next to ``gym.make("CartPole-v1")`` stepped the same
    way (fixed action, reset when an episode ends); target ratio >= 0.15. Gymnasium's own
    ``action_space.sample()`` is measured apart (a Dict space samples far slower than Discrete).
(b) vector environment: :class:`jmsra_env.vector.JMSRAVectorEnv` (via ``gymnasium.make_vec``) at
    M = 64 and 1024 against Gymnasium's ``CartPoleVectorEnv`` at the same M, in env-steps/s;
    target ratio >= 0.25 at M = 1024.
(c) PPO training: SB3 PPO (identical hyperparameters, VecNormalize) on ``NativeVecEnv`` against
    ``DummyVecEnv`` over ``gym.make`` of the Box env; target >= 1.5x env-steps/s including updates.
    (c2) the same comparison through ``train.py``'s own stack (``--vec native`` vs ``--vec dummy``).
(d) options: the vector env at M = 1024 with ``features="physics", action_encoding="deadline"``
    (the training stack's observation and action) against the plain vector step; target <= 1.3x.
(e) torch backend on the CPU (``gym.make_vec(..., backend="torch", device="cpu")``), float32 and
    float64, at M = 4096, with and without the options, eager and with ``compile=True`` (float32),
    against ``CartPoleVectorEnv`` at M = 4096; target >= 0.2x (float32, plain). On a machine with
    CUDA also (f): the torch backend on the GPU at M = 65,536 in env-steps/s (the card is named).

Timings are the best of several interleaved repeats (the machine is shared).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import jmsra_env  # noqa: F401  (registers the environments)

JMSRA_ID = "jmsra_env/JMSRA-v0"
JMSRA_BOX_ID = "jmsra_env/JMSRA-Box-v1"


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [header] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    print(f"\n{title}\n{line}")
    for k, r in enumerate(cells):
        print(" | ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            print(line)
    print(line)


def _best_rate(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Best steps/s of each timing function over interleaved repeats (fn returns steps done)."""
    best = {k: 0.0 for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            steps = fn()
            best[name] = max(best[name], steps / (time.perf_counter() - t0))
    return best


# -- (a) single environment -----------------------------------------------------------------


def _single_env_loop(env, action, steps):
    def run():
        env.reset(seed=0)
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return steps

    return run


def _sample_loop(space, steps):
    def run():
        for _ in range(steps):
            space.sample()
        return steps

    return run


def bench_single(steps: int, repeats: int) -> dict[str, float]:
    jm = gym.make(JMSRA_ID)
    cp = gym.make("CartPole-v1")
    n = jm.unwrapped.config.n_agents
    action = {"media": np.zeros(n, dtype=np.int8), "bandwidth": np.ones(n, dtype=np.float32)}
    jm.action_space.seed(0)
    cp.action_space.seed(0)
    r = _best_rate(
        {
            "jmsra": _single_env_loop(jm, action, steps),
            "cartpole": _single_env_loop(cp, 1, steps * 4),
            "jmsra_sample": _sample_loop(jm.action_space, steps),
            "cartpole_sample": _sample_loop(cp.action_space, steps * 4),
        },
        repeats,
    )
    wrappers = str(jm).split(JMSRA_ID)[0]
    _table(
        "(a) single environment, fixed valid action, steps/s (best of %d)" % repeats,
        ("what", "JMSRA-v0", "CartPole-v1", "ratio", "target"),
        [
            ("env.step (default wrappers)", f"{r['jmsra']:,.0f}", f"{r['cartpole']:,.0f}",
             f"{r['jmsra'] / r['cartpole']:.3f}", ">= 0.15"),
            ("action_space.sample() apart", f"{r['jmsra_sample']:,.0f}", f"{r['cartpole_sample']:,.0f}",
             f"{r['jmsra_sample'] / r['cartpole_sample']:.3f}", "-"),
        ],
    )
    print(f"wrappers: {wrappers}...   per step: JMSRA {1e6 / r['jmsra']:.1f} us, "
          f"CartPole {1e6 / r['cartpole']:.1f} us")
    return r


# -- (b) vector environment -----------------------------------------------------------------


def _vector_loop(envs, action, steps):
    def run():
        envs.reset(seed=0)
        for _ in range(steps):
            envs.step(action)
        return steps * envs.num_envs

    return run


def bench_vector(sizes: tuple[int, ...], env_steps: int, repeats: int) -> dict[int, tuple[float, float]]:
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    out = {}
    rows = []
    for m in sizes:
        envs = gym.make_vec(JMSRA_ID, num_envs=m, vectorization_mode="vector_entry_point")
        n = envs.config.n_agents
        rounds = envs.config.episode_rounds
        action = {"media": np.zeros((m, n), dtype=np.int8), "bandwidth": np.ones((m, n), dtype=np.float32)}
        # A whole number of episodes, so that the resets after truncation are included.
        steps = max(rounds, (env_steps // m) // rounds * rounds)
        cp = CartPoleVectorEnv(num_envs=m)
        r = _best_rate(
            {
                "jmsra": _vector_loop(envs, action, steps),
                # ~10x cheaper per step: 10x the steps, so both timings span similar wall time
                "cartpole": _vector_loop(cp, np.ones(m, dtype=np.int64), 10 * steps),
            },
            repeats,
        )
        out[m] = (r["jmsra"], r["cartpole"])
        target = ">= 0.25" if m >= 1024 else "-"
        rows.append((m, f"{steps} / {10 * steps}", f"{r['jmsra']:,.0f}", f"{r['cartpole']:,.0f}",
                     f"{r['jmsra'] / r['cartpole']:.3f}", f"{1e6 * m / r['jmsra']:.0f}", target))
    _table(
        "(b) vector environment, env-steps/s (best of %d)" % repeats,
        ("M", "steps (ours / ref)", "JMSRAVectorEnv", "CartPoleVectorEnv", "ratio", "us/step", "target"),
        rows,
    )
    return out


# -- (d) options cost, (e) torch backend ----------------------------------------------------


def bench_options(m: int, env_steps: int, repeats: int) -> dict[str, float]:
    box = "jmsra_env/JMSRA-Box-v1"
    plain = gym.make_vec(box, num_envs=m, vectorization_mode="vector_entry_point")
    opts = gym.make_vec(box, num_envs=m, vectorization_mode="vector_entry_point",
                        features="physics", action_encoding="deadline")
    steps = max(64, (env_steps // m) // 64 * 64)
    action = np.zeros((m, plain.single_action_space.shape[0]), dtype=np.float32)
    r = _best_rate({"plain": _vector_loop(plain, action, steps), "options": _vector_loop(opts, action, steps)}, repeats)
    _table(
        "(d) options cost at M = %d, env-steps/s (best of %d)" % (m, repeats),
        ("what", "env-steps/s", "cost vs plain", "target"),
        [("Box-v1 plain", f"{r['plain']:,.0f}", "1.00", "-"),
         ("features=physics, action_encoding=deadline", f"{r['options']:,.0f}",
          f"{r['plain'] / r['options']:.2f}x", "<= 1.3x")],
    )
    return r


def _torch_loop(envs, action, steps):
    def run():
        envs.reset(seed=0)
        for _ in range(steps):
            envs.step(action)
        if envs.unwrapped.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return steps * envs.num_envs

    return run


def bench_torch(m: int, steps: int, repeats: int, device: str = "cpu") -> dict[str, float]:
    import torch
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    fns = {}
    cases = [(dt, opts, False) for dt in (torch.float32, torch.float64) for opts in (False, True)]
    cases += [(torch.float32, False, True), (torch.float32, True, True)]  # compile=True
    for dtype, opts, comp in cases:
        kw = dict(features="physics", action_encoding="deadline") if opts else {}
        envs = gym.make_vec(JMSRA_BOX_ID, num_envs=m, vectorization_mode="vector_entry_point",
                            backend="torch", device=device, dtype=dtype, compile=comp, **kw)
        action = torch.zeros((m, envs.single_action_space.shape[0]), device=envs.unwrapped.device)
        if comp:  # compile before timing (the first steps pay it; cached on disk afterwards)
            t0 = time.perf_counter()
            _torch_loop(envs, action, 3)()
            print(f"  (compile=True{' + options' if opts else ''}: first 3 steps {time.perf_counter() - t0:.1f} s)")
        fns[(str(dtype).split(".")[1], opts, comp)] = _torch_loop(envs, action, steps)
    cp_m = min(m, 4096)
    cp = CartPoleVectorEnv(num_envs=cp_m)
    fns["cartpole"] = _vector_loop(cp, np.ones(cp_m, dtype=np.int64), max(1, steps * m // cp_m))
    r = _best_rate(fns, repeats)
    card = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    target = {("float32", False, False): ">= 0.2", ("float32", False, True): ">= 0.2"} if device == "cpu" else {}
    rows = [(f"torch {dt}{' + physics/deadline' if o else ''}{', compile=True' if c else ''}", f"{r[(dt, o, c)]:,.0f}",
             f"{r[(dt, o, c)] / r['cartpole']:.3f}", target.get((dt, o, c), "-"))
            for dt, o, c in [k for k in r if k != "cartpole"]]
    _table(
        f"({'f' if device != 'cpu' else 'e'}) torch backend at M = {m:,} on {card}, env-steps/s "
        f"(CartPoleVectorEnv M = {cp_m}: {r['cartpole']:,.0f}; best of {repeats})",
        ("what", "env-steps/s", "ratio to CartPoleVectorEnv", "target"),
        rows,
    )
    return r


# -- (c) PPO training -----------------------------------------------------------------------

# The project's PPO defaults (jmsra_agents.ppo.PPOConfig), with SB3's MultiInputPolicy on the raw Dict
# observation so that only the vectorisation differs between the two runs.
PPO_KWARGS = dict(n_steps=256, batch_size=512, n_epochs=10, gamma=0.0, learning_rate=3e-4)


def _ppo_rate(make_venv, total_steps: int, seed: int = 0, ppo_kwargs=None) -> tuple[float, float]:
    """(env-steps/s including updates, env-steps/s of rollout collection alone)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecNormalize

    class RolloutTimer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.collect_s = 0.0

        def _on_rollout_start(self):
            self._t0 = time.perf_counter()

        def _on_rollout_end(self):
            self.collect_s += time.perf_counter() - self._t0

        def _on_step(self):
            return True

    venv = VecNormalize(make_venv(), gamma=0.0)
    torch.manual_seed(seed)
    agent = PPO(
        "MultiInputPolicy", venv, seed=seed, device="cpu",
        policy_kwargs={"net_arch": [256, 256], "activation_fn": torch.nn.ReLU}, **(ppo_kwargs or PPO_KWARGS),
    )
    timer = RolloutTimer()
    t0 = time.perf_counter()
    agent.learn(total_timesteps=total_steps, callback=timer)
    total_s = time.perf_counter() - t0
    venv.close()
    return agent.num_timesteps / total_s, agent.num_timesteps / timer.collect_s


def bench_ppo(n_envs: int, total_steps: int, repeats: int, epochs: tuple[int, ...] = (10, 3)) -> dict:
    """PPO env-steps/s on both vectorisations, for each number of update epochs (same for both)."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from jmsra_agents.native_vec_env import make_native_vec_env

    torch.set_num_threads(1)  # the same single thread for both: fair, and robust to a shared machine
    makers = {
        "native": lambda: make_native_vec_env(JMSRA_BOX_ID, n_envs, seed=0),
        "dummy": lambda: make_vec_env(JMSRA_BOX_ID, n_envs=n_envs, seed=0, vec_env_cls=DummyVecEnv),
    }
    _ppo_rate(makers["dummy"], PPO_KWARGS["n_steps"] * n_envs)  # warm-up: torch's one-time costs
    results, rows = {}, []
    for n_epochs in epochs:
        kwargs = dict(PPO_KWARGS, n_epochs=n_epochs)
        out = {name: (0.0, 0.0) for name in makers}
        for _ in range(repeats):
            for name, make in makers.items():
                rate, collect = _ppo_rate(make, total_steps, ppo_kwargs=kwargs)
                out[name] = (max(out[name][0], rate), max(out[name][1], collect))
        (nat, nat_c), (dum, dum_c) = out["native"], out["dummy"]
        results[n_epochs] = out
        rows.append((f"training, n_epochs={n_epochs}", f"{nat:,.0f}", f"{dum:,.0f}", f"{nat / dum:.2f}x",
                     ">= 1.5x"))
        rows.append((f"  of which rollout collection", f"{nat_c:,.0f}", f"{dum_c:,.0f}",
                     f"{nat_c / dum_c:.2f}x", "-"))
    _table(
        f"(c) SB3 PPO on {JMSRA_BOX_ID}, {n_envs} envs, {total_steps:,} steps, env-steps/s, best of "
        f"{repeats}\n    (n_steps={PPO_KWARGS['n_steps']}, batch={PPO_KWARGS['batch_size']}, gamma=0, "
        "MultiInputPolicy 256x256 ReLU, VecNormalize, VecMonitor/Monitor, CPU, 1 torch thread)",
        ("what", "NativeVecEnv", "DummyVecEnv", "ratio", "target"),
        rows,
    )
    return results


def bench_train_stack(n_envs: int, total_steps: int, repeats: int) -> dict[str, float] | None:
    """``train.py``'s own stack (``jmsra_agents.envs.make_train_env`` + ``jmsra_agents.ppo.make_ppo`` with the
    default ``PPOConfig``), ``--vec native`` against ``--vec dummy``."""
    import torch

    try:
        from jmsra_agents.envs import make_train_env
        from jmsra_agents.ppo import PPOConfig, make_ppo
    except ImportError as exc:  # the training package is another module's; report, do not fail
        print(f"\n(c2) train.py stack: not available ({exc})")
        return None
    torch.set_num_threads(1)
    cfg = PPOConfig()

    def rate(vec: str) -> float:
        venv = make_train_env(JMSRA_BOX_ID, n_envs, 0, vec=vec)
        agent = make_ppo(venv, cfg, seed=0, device="cpu")
        t0 = time.perf_counter()
        agent.learn(total_timesteps=total_steps)
        elapsed = time.perf_counter() - t0
        venv.close()
        return agent.num_timesteps / elapsed

    rate("dummy")  # warm-up
    best = {"native": 0.0, "dummy": 0.0}
    for _ in range(repeats):
        for vec in best:
            best[vec] = max(best[vec], rate(vec))
    _table(
        f"(c2) train.py's stack (make_train_env + make_ppo, default PPOConfig: n_steps={cfg.n_steps}, "
        f"batch={cfg.batch_size}, epochs={cfg.n_epochs}, net={list(cfg.net_arch)}), {n_envs} envs, "
        f"{total_steps:,} steps, CPU, 1 torch thread, best of {repeats}",
        ("what", "--vec native", "--vec dummy", "ratio", "target"),
        [("training env-steps/s", f"{best['native']:,.0f}", f"{best['dummy']:,.0f}",
          f"{best['native'] / best['dummy']:.2f}x", ">= 1.5x")],
    )
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("a", "b", "c", "d", "e", "f"), action="append", help="run only these sections")
    p.add_argument("--quick", action="store_true", help="fewer steps (smoke test)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ppo-envs", type=int, default=16)
    p.add_argument("--ppo-steps", type=int, default=20_480)
    args = p.parse_args(argv)
    sections = set(args.only or ("a", "b", "c", "d", "e", "f"))
    repeats = 2 if args.quick else args.repeats
    print(f"gymnasium {gym.__version__}, numpy {np.__version__}, jmsra_env {jmsra_env.__version__}")
    if "a" in sections:
        bench_single(2_000 if args.quick else 20_000, repeats)
    if "b" in sections:
        bench_vector((64, 1024), 100_000 if args.quick else 1_000_000, repeats)
    if "d" in sections:
        bench_options(1024, 100_000 if args.quick else 1_000_000, repeats)
    if "e" in sections:
        bench_torch(4096, 20 if args.quick else 130, repeats)
    if "f" in sections:
        import torch

        if torch.cuda.is_available():
            bench_torch(65_536, 20 if args.quick else 200, repeats, device="cuda")
        else:
            print("\n(f) no CUDA device here: the GPU figure is measured on a machine with one")
    if "c" in sections:
        bench_ppo(args.ppo_envs, 4_096 if args.quick else args.ppo_steps, 1 if args.quick else 2)
        bench_train_stack(args.ppo_envs, 4_096 if args.quick else args.ppo_steps, 1 if args.quick else 2)


if __name__ == "__main__":
    main()
