"""The ``evaluate.py`` / ``jmsra-evaluate`` command line: parse, check, call the evaluation core, write.

Examples::

    jmsra-evaluate                                       # experts and baselines on jmsra_env/JMSRA-v0
    jmsra-evaluate --env-id jmsra_env/JMSRA-N8-v0 --episodes 100
    jmsra-evaluate --model runs/ppo-n4 --policies jmsra,optimal,nl-only,kv-only
    jmsra-evaluate --sweep bandwidth --episodes 20
    jmsra-evaluate --sweep load --config bandwidth_hz=10e6
    jmsra-evaluate --env-id jmsra_env/JMSRA-Session-v0 --episodes 200   # whole episodes, session experts
    jmsra-evaluate --sweep pool --episodes 64                            # KV pool per agent (sessions)

The library behind it is :mod:`jmsra_env.evaluation` (rounds, policies, statistics, sweeps, report);
trained models plug in through :mod:`jmsra_agents.evaluation`. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from jmsra_env import evaluation as ev
from jmsra_env.config import make_config, parse_overrides
from jmsra_env.evaluation import report as rep

from .evaluation import load_model_policy

DEVICES = ("auto", "cpu", "cuda")

EPILOG = """\
outputs (in --out):
  evaluation: summary.csv, rounds.csv (per-round latency per policy), timing.csv, summary.json,
              summary.md, latency_cdf.png, latency_bars.png
  --sweep S:  sweep_S.csv, sweep_S.png
  summary.csv, rounds.csv and sweep_S.csv hold no timings and are byte-identical for the same
  arguments; decision timings go to timing.csv, summary.json and summary.md. --out is checked
  before anything runs; the result set is written into a temporary folder and swapped in only after
  everything succeeded (never a mix of old and new files); files of the same result set that this
  run no longer produces (e.g. plots after --no-plots) are removed and listed; other result sets in
  the folder (an evaluation next to sweeps) are kept.

sessions (--env-id jmsra_env/JMSRA-Session-v0, ...): whole episodes are rolled per policy on the same
  exogenous rounds (episode e = env.reset(seed=SEED + e); each policy has its own receiver); the
  summary adds evictions_per_episode and pool_used_fraction; clairvoyant (kind bound) reads the
  environment's true future rounds.

statistics: mean with a 95 % Student t interval over per-episode means (episodes are independent);
  gap = mean / mean(reference) - 1 with a paired t interval; reference = optimal, else jmsra.
  p50 / p95 pool all rounds. Episode e is the one env.reset(seed=SEED + e) draws.

sweeps (defaults; override with --sweep-values):
""" + "\n".join(
    f"  {s.name:<10} {s.description}:\n             {', '.join(ev.format_sweep_value(s, v) for v in s.values)}"
    for s in ev.SWEEPS.values()
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description=(
            "Evaluate experts, baselines and trained PPO models on the same seeded rounds (common random "
            "numbers) and write a table, CSV/JSON/Markdown and plots; or sweep a scenario parameter."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--env-id",
        default=None,
        help=f"registered scenario (default: the first --model's, else {ev.DEFAULT_ENV_ID}); an ID and its "
        "-Box twin name the same scenario; a model must fit its N",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scenario override, repeatable (e.g. bandwidth_hz=10e6, n_agents=6, "
        "sender_devices='[\"snapdragon-8-gen-3\"]'); VALUE is JSON, else a string",
    )
    p.add_argument("--episodes", type=int, default=20, help="episodes (of episode_rounds rounds each; default 20)")
    p.add_argument(
        "--seed",
        type=int,
        default=ev.DEFAULT_SEED,
        help=f"episode e uses seed SEED + e (default {ev.DEFAULT_SEED}: held out from train.py's training "
        f"seeds and its model-selection seeds {ev.SELECTION_SEED}..)",
    )
    p.add_argument(
        "--policies",
        default=None,
        metavar="NAMES",
        help="comma-separated experts/baselines: optimal (N <= 12), jmsra, nl-only, kv-only, nl-only-equal, "
        "kv-only-equal, threshold-equal, random; stale-aware (the least expected latency given a stale channel; "
        "only when named); decentralised yardsticks (each agent on its own "
        "observation): threshold-local, proportional-local; 'none' for models only. Default: all experts and "
        "baselines (optimal skipped for N > 12); for a sweep: nl-only, kv-only, jmsra, optimal. On a session "
        "scenario (JMSRA-Session-*): jmsra, pool-aware, lookahead, clairvoyant, nl-only, kv-only (all by "
        "default; a sweep: nl-only, jmsra, pool-aware, lookahead, clairvoyant)",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="also evaluate 'oracle': the optimum (JMSRA above N = 12) deciding on the true, fresh channel; "
        "the bound with stale CSI (csi_delay > 0), identical to optimal otherwise",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="trained model (run dir, model.zip or checkpoint dir; a multi-agent run dir of "
        "jmsra-train-marl, recognised by its marl.json), repeatable",
    )
    p.add_argument(
        "--optimal-split",
        action="store_true",
        help="also evaluate each --model with its bandwidth split replaced by the optimal one for its media "
        "on the observed round (rows LABEL+split): what its media cost apart from what its split costs",
    )
    p.add_argument("--sweep", default=None, metavar="NAME", help=f"sweep a parameter: {', '.join(ev.SWEEPS)}")
    p.add_argument("--sweep-values", default=None, metavar="V,V,...", help="values of the swept parameter")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="torch device for trained models (default: cpu; auto picks CUDA when available; "
                   "cuda without CUDA is an error, as in train.py)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading models from pickled SB3 files (they can run code when loaded: only "
                   "for files you trust)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: on a terminal)")
    return p


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    try:
        return parse_overrides(items)
    except ValueError as exc:
        raise ev.EvaluationError(str(exc)) from None


def _parse_policies(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    return [] if names == ["none"] else names


def _parse_model(spec: str) -> tuple[str | None, str]:
    if "=" in spec and not Path(spec).exists():
        label, _, path = spec.partition("=")
        return label.strip() or None, path
    return None, spec


def _prepare(args) -> dict[str, Any]:
    """Validate everything and load the models; nothing is written here."""
    overrides = _parse_overrides(args.config)
    if args.episodes < 1:
        raise ev.EvaluationError(f"--episodes must be >= 1; got {args.episodes}")
    if args.seed < 0:
        raise ev.EvaluationError(f"--seed must be >= 0; got {args.seed}")
    sweep = ev.get_sweep(args.sweep) if args.sweep is not None else None
    if sweep is None and args.sweep_values is not None:
        raise ev.EvaluationError("--sweep-values needs --sweep")
    if sweep is not None and args.oracle:
        raise ev.EvaluationError("--oracle is for an evaluation, not a sweep")
    if sweep is not None and args.optimal_split:
        raise ev.EvaluationError("--optimal-split is for an evaluation, not a sweep")
    if args.optimal_split and not args.model:
        raise ev.EvaluationError("--optimal-split applies to trained models: add one with --model PATH")
    names = _parse_policies(args.policies)
    device = _resolve_device(args.device)
    models = [_load_model(path, label, device, args.trust_pickle) for label, path in map(_parse_model, args.model)]

    if args.env_id is not None:
        cfg, _ = ev.scenario_from_env_id(args.env_id, overrides)
        env_id = args.env_id
    elif sweep is not None and sweep.session_only and not models:
        cfg, _ = ev.scenario_from_env_id(ev.DEFAULT_SESSION_ENV_ID, overrides)
        env_id = ev.DEFAULT_SESSION_ENV_ID
    elif models:
        first = models[0]
        env_id = first.env_id or "?"
        try:
            cfg = make_config(first.config, **overrides)
        except ValueError as exc:
            raise ev.EvaluationError(str(exc)) from exc
    else:
        cfg, _ = ev.scenario_from_env_id(ev.DEFAULT_ENV_ID, overrides)
        env_id = ev.DEFAULT_ENV_ID
    if args.oracle and ev.is_session(cfg):
        raise ev.EvaluationError(
            "--oracle (the single-round optimum on the fresh channel) is for single-round scenarios; on a "
            "session scenario the bound is the 'clairvoyant' expert (in the default list)"
        )
    notes: list[str] = []
    for m in models:
        # In a sweep N may change with the value; the models are matched per value there.
        if sweep is None or sweep.name != "agents":
            ev.check_policy_fits(m, cfg, env_id=env_id if args.env_id else None)
        notes += m.notes
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ev.EvaluationError(f"two models share a label {labels}; name them with --model LABEL=PATH")

    plan: dict[str, Any] = {"cfg": cfg, "env_id": env_id, "models": models, "notes": notes, "sweep": sweep}
    if sweep is not None:
        plan["values"] = ev.parse_sweep_values(sweep, args.sweep_values)
        ev.sweep_configs(sweep, cfg, plan["values"])
        ev.check_sweep_policies(names, sweep, cfg, plan["values"])
        plan["names"] = names
    else:
        experts, expert_notes = ev.resolve_experts(_non_local(names), cfg)
        experts += _local_policies(names, cfg)
        if args.oracle:
            experts.insert(0, ev.oracle_policy(cfg))
        if any(e.label in labels for e in experts):
            raise ev.EvaluationError(f"a model label collides with an expert name: {labels}")
        if not experts and not models:
            raise ev.EvaluationError("nothing to evaluate: --policies none and no --model")
        split = [ev.OptimalSplit(m, cfg) for m in models] if args.optimal_split else []
        taken = {e.label for e in experts} | set(labels)
        if any(p.label in taken for p in split):
            raise ev.EvaluationError(f"a label collides with a '+split' row: {[p.label for p in split]}")
        plan["policies"] = [*experts, *models, *split]
        notes += expert_notes
    if args.episodes < 2:
        notes.append("one episode: no confidence interval (it needs >= 2 episodes)")
    return plan


def _load_model(path: str, label: str | None, device: str, trust_pickle: bool):
    """A trained model as an evaluation policy: a multi-agent run directory (it holds ``marl.json``,
    :func:`jmsra_agents.marl.load_marl_policy`) or a PPO run / model / checkpoint."""
    if (Path(path) / "marl.json").is_file():
        from .marl import load_marl_policy

        try:
            return load_marl_policy(path, device, label=label)
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported with the path
            raise ev.EvaluationError(f"cannot load multi-agent run {path!r}: {type(exc).__name__}: {exc}") from exc
    return load_model_policy(path, label=label, device=device, trust_pickle=trust_pickle)


def _non_local(names: list[str] | None) -> list[str] | None:
    from jmsra_env.multiagent import LOCAL_POLICY_NAMES

    return None if names is None else [n for n in names if n not in LOCAL_POLICY_NAMES]


def _local_policies(names: list[str] | None, cfg) -> list:
    """The decentralised yardsticks asked for by name (``threshold-local``, ``proportional-local``)."""
    from jmsra_env.multiagent import LOCAL_POLICY_NAMES, make_team_policy

    return [make_team_policy(n, cfg) for n in dict.fromkeys(names or ()) if n in LOCAL_POLICY_NAMES]


def _resolve_device(device: str) -> str:
    """As train.py: ``auto`` picks CUDA when available; ``cuda`` without CUDA is an error."""
    if device == "cpu":
        return device
    from .ppo import resolve_device

    try:
        return resolve_device(device)
    except ValueError as exc:
        raise ev.EvaluationError(str(exc)) from None


def _open_out(args) -> rep.ResultFolder:
    """The output folder, checked (and its staging folder made) before anything is computed."""
    result_set = rep.sweep_files(args.sweep) if args.sweep is not None else rep.EVALUATION_FILES
    try:
        return rep.ResultFolder(args.out, result_set)
    except ValueError as exc:
        raise ev.EvaluationError(str(exc)) from None


def _versions() -> dict[str, str]:
    import platform

    import numpy

    import jmsra_env

    return {"jmsra_env": jmsra_env.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def _run_evaluation(args, plan) -> dict[str, bytes | str]:
    cfg, progress = plan["cfg"], (False if args.no_progress else None)
    session = ev.is_session(cfg)
    # A session scenario is rolled episode by episode (the receiver's memory links the rounds);
    # a single-round one is drawn once and charged (evaluate_scenario picks the path).
    results = ev.evaluate_scenario(cfg, plan["policies"], args.episodes, args.seed, progress=progress)
    rounds_per_episode = cfg.episode_rounds
    summary = ev.summarise(results)
    timing = ev.timing_rows(results)
    title = (
        f"{plan['env_id']} (N = {cfg.n_agents}): {args.episodes} episodes x {cfg.episode_rounds} rounds, "
        f"seed {args.seed}"
    )
    ref = ev.reference_label(results)
    caption = (
        "95% CI: Student t over per-episode means; gap: mean / mean(" + (ref or "-") + ") - 1 with a paired t CI; "
        "p50/p95 over all rounds; decide = batched wall time / rounds, single = one un-batched decision"
    )
    if session:
        caption += (
            "; whole episodes rolled per policy on the same exogenous rounds (each policy with its own "
            "receiver); evictions/ep: evictions per episode; pool used: mean fraction of the KV pool in use "
            "after a round"
        )
    rep.print_summary(summary, timing, title, caption)

    files: dict[str, bytes | str] = {}
    files["summary.csv"] = rep.csv_text(summary, ev.summary_columns(summary))
    files["timing.csv"] = rep.csv_text(timing, ev.TIMING_COLUMNS)
    per_round = [
        {"episode": m // rounds_per_episode, "round": m % rounds_per_episode,
         **{r.label: r.latency_s[m] for r in results}}
        for m in range(args.episodes * rounds_per_episode)
    ]
    files["rounds.csv"] = rep.csv_text(per_round, ["episode", "round", *[r.label for r in results]])
    by_label = {t["policy"]: t for t in timing}
    files["summary.json"] = rep.json_text(
        {
            "env_id": plan["env_id"],
            "scenario": cfg.to_dict(),
            "seed": args.seed,
            "episodes": args.episodes,
            "rounds_per_episode": cfg.episode_rounds,
            "episode_seeds": f"{args.seed}..{args.seed + args.episodes - 1}",
            "reference": ref,
            **({"evaluation": "whole episodes rolled per policy (session scenario)"} if session else {}),
            "statistics": caption,
            "policies": [{**row, **by_label[row["policy"]]} for row in summary],
            "models": [
                {"label": m.label, "path": m.path, "env_id": m.env_id}
                for m in plan["models"]
            ],
            "notes": plan["notes"],
            "versions": _versions(),
        }
    )
    md = [f"## {title}", "", rep.markdown_table(summary, timing), caption + ".", ""]
    md += [f"- {n}" for n in plan["notes"]]
    files["summary.md"] = "\n".join(md).rstrip() + "\n"
    if not args.no_plots:
        files["latency_cdf.png"] = rep.cdf_png(
            {r.label: r.latency_s for r in results},
            f"E2E latency per round, {plan['env_id']} (N = {cfg.n_agents})\n"
            f"{args.episodes} episodes x {cfg.episode_rounds} rounds, seed {args.seed}, same rounds for all",
        )
        files["latency_bars.png"] = rep.bars_png(
            summary, f"{plan['env_id']} (N = {cfg.n_agents}), {args.episodes} episodes"
        )
    return files


def _run_sweep(args, plan) -> dict[str, bytes | str]:
    sweep, cfg = plan["sweep"], plan["cfg"]
    progress = False if args.no_progress else None
    rows, notes = ev.run_sweep(
        sweep, cfg, plan["values"], episodes=args.episodes, seed=args.seed,
        policy_names=plan["names"], models=plan["models"], progress=progress,
    )
    plan["notes"] += notes
    fmt = lambda v: ev.format_sweep_value(sweep, v)  # noqa: E731
    title = (
        f"sweep {sweep.name} on {plan['env_id']} (N = {cfg.n_agents})\n"
        f"{args.episodes} episodes x {cfg.episode_rounds} rounds per value, seed {args.seed}"
    )
    rep.print_sweep(rows, title.replace("\n", ": "), fmt, session=bool(cfg.session.enabled))
    for line in ev.sweep_findings(rows, sweep):
        print(line)
    files: dict[str, bytes | str] = {f"sweep_{sweep.name}.csv": rep.csv_text(rows, ev.sweep_columns(rows))}
    if not args.no_plots:
        files[f"sweep_{sweep.name}.png"] = rep.sweep_png(
            rows, title, sweep.parameter, log_x=sweep.log_x, categorical=sweep.categorical,
            x_scale=1e6 if sweep.name == "bandwidth" else 1.0,
        )
    return files


def _error(message: Any, status: int = 2) -> int:
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    return status


def _run(args, folder: rep.ResultFolder) -> int:
    try:
        plan = _prepare(args)
    except ev.EvaluationError as exc:
        return _error(exc)
    if not plan["models"]:
        print("No trained model given (add one with --model PATH): evaluating the experts and baselines only.")
    for note in plan["notes"]:
        print(f"note: {note}")
    files = _run_sweep(args, plan) if plan["sweep"] is not None else _run_evaluation(args, plan)
    from .checkpoint import deferred_signals

    try:
        with deferred_signals():  # the swap is two renames: a signal waits for them
            stale = folder.commit(files)
    except OSError as exc:
        return _error(f"cannot write --out {args.out!r} ({exc}); its earlier results are untouched", 1)
    print(f"wrote {', '.join(files)} to {args.out}/ (N = {plan['cfg'].n_agents})")
    if stale:
        print(f"removed stale {', '.join(stale)} of an earlier run (not produced by this one)")
    return 0


class _Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM during an evaluation (``signum`` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_on_signals():
    """SIGINT / SIGTERM raise :class:`_Stopped` (main thread only); returns the old handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise _Stopped(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    return old


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, with the problem on stderr; 130 / 143
    when stopped by SIGINT / SIGTERM, the earlier result set in ``--out`` intact)."""
    args = build_parser().parse_args(argv)
    old = _stop_on_signals()
    folder = None
    try:
        try:
            folder = _open_out(args)  # before anything runs: an unwritable --out fails fast
        except ev.EvaluationError as exc:
            return _error(exc)
        return _run(args, folder)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        if folder is not None and folder.committed:
            what = f"the new results are in --out {args.out!r}"
        else:
            what = f"nothing written, --out {args.out!r} is as it was"
        print(f"evaluate.py: interrupted ({signal.Signals(signum).name}); {what}", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if folder is not None:
            folder.abort()  # the staging folder, if it was not swapped in
        for s, h in old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)


if __name__ == "__main__":
    sys.exit(main())
