"""Speed and quality of the experts (jmsra_env.solvers), each figure next to a reference.

    python benchmarks/bench_experts.py            # everything (about a minute on 2 cores)
    python benchmarks/bench_experts.py --quick    # fewer rounds, for a smoke test
    python benchmarks/bench_experts.py --only a   # (a) decision time, (a2) JMSRA vs optimal, (b) batched, (c) quality

(a) decision time per round, single-round calls: JMSRA at N = 4, 8, 16, 32, 64 and the exhaustive
    optimum at N = 4..12, 14, 16 (median over rounds), next to one ``gym.make("CartPole-v1")`` step
    measured in the same run. Targets: JMSRA <= 2 ms at N = 4 and <= 50 ms at N = 32;
    exhaustive N = 10 <= 0.5 s.
(a2) JMSRA against the exhaustive optimum, single-round calls on the same rounds, N = 4..8
    (medians of the per-round best of 3 interleaved calls). Targets: JMSRA <= 100 CartPole steps
    at N = 4, and not slower than the optimum at N <= 8.
(b) batched JMSRA: rounds/s on a batch of 4096 rounds at N = 4 and 8, next to the same solver
    called one round at a time in the same run (ratio). Target >= 20,000 rounds/s at N = 4.
(c) quality over default rounds (world process, 2000 rounds at N = 4 and 8, 300 at N = 16): JMSRA's gap to
    the optimum (mean, p99, max), the mean latency ratio of NL-only and KV-only to JMSRA and to
    the optimum, the KV share of the optimum, and on how many rounds JMSRA loses to a baseline.
    Targets: mean gap <= 0.5 %, max <= 5 %.

Timings are the best of interleaved repeats where it matters (the machine is shared).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jmsra_env import make_config, model, solvers
from jmsra_env.model import RoundTerms
from jmsra_env.world import WorldProcess


def rounds(n_agents: int, n_rounds: int, seed: int = 0) -> RoundTerms:
    """``n_rounds`` default-scenario rounds (a batch of worlds over a few steps), shape (M, N)."""
    cfg = make_config(n_agents=n_agents)
    consts = model.model_constants(cfg)
    m = min(n_rounds, 1024)
    world = WorldProcess(cfg, m)
    rng = np.random.default_rng(seed)
    world.reset(rng)
    parts = []
    while sum(p.batch_shape[0] for p in parts) < n_rounds:
        parts.append(world.true_terms())
        world.step(rng)
    fields = ("prefill_s", "extra_compute_s", "payload_bits", "receiver_s", "answer_s", "gain_hz")
    cat = [np.concatenate([getattr(p, f) for p in parts])[:n_rounds] for f in fields]
    return RoundTerms(*cat, consts.bandwidth_hz, consts.latency_cap_s)


def cartpole_step_s(steps: int = 20000) -> float:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(0)
            if term or trunc:
                env.reset()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def per_round_s(fn, terms: RoundTerms, k: int) -> np.ndarray:
    one = [terms[i] for i in range(k)]
    fn(one[0])  # warm-up
    out = np.empty(k)
    for i, t in enumerate(one):
        t0 = time.perf_counter()
        fn(t)
        out[i] = time.perf_counter() - t0
    return out


def section_a(quick: bool) -> None:
    ref = cartpole_step_s(5000 if quick else 20000)
    print(f"\n(a) decision time per round (single-round calls); reference CartPole-v1 step = {ref * 1e6:.1f} us")
    print(f"{'solver':<12}{'N':>4}{'rounds':>8}{'median':>12}{'p90':>12}{'x CartPole':>12}  target")
    targets = {("jmsra", 4): 2e-3, ("jmsra", 32): 50e-3, ("exhaustive", 10): 0.5}
    for n in (4, 8, 16, 32, 64):
        k = {4: 300, 8: 150, 16: 40, 32: 15, 64: 6}[n] // (3 if quick else 1)
        t = per_round_s(solvers.jmsra, rounds(n, k, seed=n), k)
        _row("jmsra", n, t, ref, targets.get(("jmsra", n)))
    counts = {4: 200, 5: 150, 6: 100, 7: 60, 8: 40, 9: 20, 10: 10, 11: 6, 12: 5, 14: 5, 16: 5}
    for n, k in counts.items():
        k = max(3, k // (3 if quick else 1))
        t = per_round_s(solvers.exhaustive, rounds(n, k, seed=n), k)
        _row("exhaustive", n, t, ref, targets.get(("exhaustive", n)))


def section_a2(quick: bool) -> None:
    ref = cartpole_step_s(5000 if quick else 20000)
    print(f"\n(a2) JMSRA vs the exhaustive optimum, single rounds; reference CartPole-v1 step = {ref * 1e6:.1f} us")
    print(f"{'N':>3}{'rounds':>8}{'jmsra':>12}{'x CartPole':>12}{'optimal':>12}{'jmsra/optimal':>15}  target")
    for n in (4, 5, 6, 7, 8):
        k = 100 // (3 if quick else 1)
        terms = rounds(n, k, seed=n)
        one = [terms[i] for i in range(k)]
        best = {"jmsra": np.full(k, np.inf), "optimal": np.full(k, np.inf)}
        solvers.jmsra(one[0]), solvers.exhaustive(one[0])  # warm-up
        for _ in range(3):
            for name, fn in (("jmsra", solvers.jmsra), ("optimal", solvers.exhaustive)):
                for i, t in enumerate(one):
                    t0 = time.perf_counter()
                    fn(t)
                    best[name][i] = min(best[name][i], time.perf_counter() - t0)
        jm, opt = np.median(best["jmsra"]), np.median(best["optimal"])
        checks = [f"<= optimal: {'PASS' if jm <= opt else 'FAIL'}"]
        if n == 4:
            checks.insert(0, f"<= 100 CartPole: {'PASS' if jm <= 100 * ref else 'FAIL'}")
        print(f"{n:>3}{k:>8}{_fmt(jm):>12}{jm / ref:>12.0f}{_fmt(opt):>12}{jm / opt:>15.2f}  {', '.join(checks)}")


def _row(name, n, t, ref, target):
    med, p90 = np.median(t), np.quantile(t, 0.9)
    tgt = "" if target is None else f"<= {_fmt(target)}: {'PASS' if med <= target else 'FAIL'}"
    print(f"{name:<12}{n:>4}{len(t):>8}{_fmt(med):>12}{_fmt(p90):>12}{med / ref:>12.0f}  {tgt}")


def _fmt(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s < 1.0 else f"{s:.3f} s"


def section_b(quick: bool) -> None:
    print("\n(b) batched JMSRA vs the same solver one round at a time (same run, best of 3)")
    print(f"{'N':>3}{'batch':>7}{'batched rounds/s':>18}{'single rounds/s':>17}{'ratio':>8}  target")
    for n in (4, 8):
        m = 1024 if quick else 4096
        terms = rounds(n, m, seed=100 + n)
        k = 60 if quick else 200
        one = [terms[i] for i in range(k)]
        solvers.jmsra(terms[:8])
        best_b = best_s = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            solvers.jmsra(terms)
            best_b = max(best_b, m / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for t in one:
                solvers.jmsra(t)
            best_s = max(best_s, k / (time.perf_counter() - t0))
        tgt = f">= 20,000: {'PASS' if best_b >= 20000 else 'FAIL'}" if n == 4 else ""
        print(f"{n:>3}{m:>7}{best_b:>18,.0f}{best_s:>17,.0f}{best_b / best_s:>8.1f}  {tgt}")


def section_c(quick: bool) -> None:
    sizes = {4: 1000, 8: 1000, 16: 100} if quick else {4: 2000, 8: 2000, 16: 300}
    print("\n(c) quality over default rounds (world process, seed 7); latencies as charged")
    for n, m in sizes.items():
        terms = rounds(n, m, seed=7)
        t0 = time.perf_counter()
        d = {name: solvers.solve(name, terms, rng=np.random.default_rng(0)) for name in solvers.EXPERT_NAMES}
        spent = time.perf_counter() - t0
        opt = d["optimal"].latency_s
        jm = d["jmsra"].latency_s
        gap = jm / opt - 1.0
        print(f"\nN = {n}  ({m} rounds, all {len(d)} experts in {spent:.2f} s)")
        print(
            f"  JMSRA gap to optimum: mean {gap.mean() * 100:.4f} %, p99 {np.quantile(gap, 0.99) * 100:.4f} %, "
            f"max {gap.max() * 100:.4f} %, optimal on {np.mean(gap <= 1e-9) * 100:.1f} % of rounds  "
            f"(targets mean <= 0.5 %: {'PASS' if gap.mean() <= 0.005 else 'FAIL'}, "
            f"max <= 5 %: {'PASS' if gap.max() <= 0.05 else 'FAIL'})"
        )
        kv_share = d["optimal"].media.mean()
        print(f"  KV share of the optimum: {kv_share:.3f}; of JMSRA: {d['jmsra'].media.mean():.3f}")
        print(f"  {'policy':<16}{'mean T (s)':>11}{'/ JMSRA':>9}{'/ optimal':>11}{'JMSRA worse on':>16}")
        for name in solvers.EXPERT_NAMES:
            lat = d[name].latency_s
            loses = np.mean(jm > lat * (1 + 1e-9)) * 100
            print(
                f"  {name:<16}{lat.mean():>11.3f}{np.mean(lat / jm):>9.3f}{np.mean(lat / opt):>11.3f}"
                f"{loses:>15.2f}%"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    p.add_argument("--only", choices=("a", "a2", "b", "c"), help="run one section")
    args = p.parse_args()
    for key, fn in (("a", section_a), ("a2", section_a2), ("b", section_b), ("c", section_c)):
        if args.only in (None, key):
            fn(args.quick)


if __name__ == "__main__":
    main()
