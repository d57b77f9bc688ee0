"""``jmsra-train`` / ``train.py``: parse the flags into a :class:`jmsra_agents.training.TrainSpec` and train.

Quick train + comparison with JMSRA, NL-only and KV-only (about a minute on 2 CPU cores)::

    jmsra-train --quick            # or: python train.py --quick

See ``docs/training.md`` for every flag, the run-directory format and resume rules. The PPO flags
are generated from :class:`jmsra_agents.ppo.PPOConfig` (one ``--flag`` per field, help from the field).
Exit status: 0 done, 2 bad input (one line naming the flag), 130 / 143 stopped by SIGINT / SIGTERM
(the model is saved; the resume command is printed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import signal
import sys
from typing import Any

__all__ = ["build_parser", "validate_args", "spec_from_args", "main"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help text already explains a ``None`` default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _add_ppo_flags(group, fields=None) -> None:
    """One flag per :class:`PPOConfig` field (or per one of ``fields``); ``None`` default = the
    recipe's default (shown in help)."""
    from jmsra_agents.ppo import PPOConfig

    for f in dataclasses.fields(PPOConfig) if fields is None else fields:
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else ("none" if f.default is None else f.default)
        help_text = f"{meta.get('help', '')} (default {shown})"
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parse = meta.get("parse", type(f.default))
            group.add_argument(flag, type=parse, choices=meta.get("choices"), default=None,
                               metavar=None if "choices" in meta else f.name.upper(), help=help_text)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from jmsra_agents.encoding import ACTION_ENCODINGS, DEFAULT_ENCODING
    from jmsra_agents.envs import VEC_KINDS
    from jmsra_agents.features import DEFAULT_FEATURES, FEATURE_SETS
    from jmsra_agents.ppo import DEVICES
    from jmsra_agents import training as t

    p = argparse.ArgumentParser(
        prog=prog,
        description="Train PPO on a jmsra_env scenario (SB3-ready Box actions), log to TensorBoard, "
        "checkpoint atomically, and compare the result with JMSRA, NL-only and KV-only.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--env-id", default=t.TrainSpec.env_id, help="registered ID; a Dict-action ID trains on its -Box twin")
    g.add_argument("--total-timesteps", type=int, default=None,
                   help=f"environment steps in total (default {t.DEFAULT_TIMESTEPS:,}; with --quick "
                   f"{t.QUICK_TIMESTEPS:,}; with --resume the run's own target)")
    g.add_argument("--quick", action="store_true",
                   help=f"quick run: {t.QUICK_TIMESTEPS:,} PPO steps after {t.QUICK_BC_STEPS:,} behaviour-cloning "
                   f"steps on {t.QUICK_BC_ROUNDS:,} rounds")
    g.add_argument("--n-envs", type=int, default=t.TrainSpec.n_envs, help="parallel environments")
    g.add_argument("--vec", choices=VEC_KINDS, default=t.TrainSpec.vec,
                   help="DummyVecEnv, SubprocVecEnv (spawn) or the batched NumPy env")
    g.add_argument("--seed", type=int, default=t.TrainSpec.seed, help="seeds envs, network and BC data")
    g.add_argument("--device", choices=DEVICES, default=t.TrainSpec.device, help="auto picks CUDA when available")
    g.add_argument("--threads", type=int, default=t.TrainSpec.threads, help="torch CPU threads")
    g.add_argument("--logdir", default=t.TrainSpec.logdir, help="parent directory of run directories")
    g.add_argument("--run-name", default=None, help="default: <variant>-ppo-seed<seed>-<timestamp>")
    g.add_argument("--force", action="store_true",
                   help="replace an existing run directory (only a run of this tool that no live process holds)")
    g.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run (run dir: its newest consistent model or checkpoint; or a checkpoint "
                   "dir or model.zip) with its timestep count and settings")
    g.add_argument("--config", metavar="KEY=VALUE", action="append", default=[],
                   help="env config override (JSON value), e.g. --config n_agents=8 "
                   "--config channel.bandwidth_hz=1e7; repeatable")
    g.add_argument("--no-progress-bar", action="store_true", help="no tqdm/rich progress bar")
    g.add_argument("--verbose", type=int, default=t.TrainSpec.verbose, help="SB3 verbosity (1 prints the losses)")

    g = p.add_argument_group("observation and pre-training")
    g.add_argument("--features", choices=FEATURE_SETS, default=DEFAULT_FEATURES,
                   help="observation features (jmsra_agents.features)")
    g.add_argument("--action-encoding", choices=ACTION_ENCODINGS, default=DEFAULT_ENCODING,
                   help="how the network's output becomes the env's Box action (jmsra_agents.encoding)")
    g.add_argument("--no-norm-reward", action="store_true", help="do not normalise rewards")
    g.add_argument("--bc-steps", type=int, default=None,
                   help=f"behaviour-cloning gradient steps from the expert before PPO (0 = pure RL; "
                   f"default {t.DEFAULT_BC_STEPS})")
    g.add_argument("--bc-rounds", type=int, default=None,
                   help=f"rounds in the behaviour-cloning set (default {t.DEFAULT_BC_ROUNDS:,}; --quick {t.QUICK_BC_ROUNDS:,}; "
                        f"session IDs: {t.SESSION_BC_ROUNDS:,}, --quick {t.QUICK_SESSION_BC_ROUNDS:,}, whole episodes)")
    g.add_argument("--bc-lr", type=float, default=t.TrainSpec.bc_lr, help="behaviour-cloning step size")
    g.add_argument("--bc-expert", default=None,
                   help=f"expert to clone (default: jmsra; on a session ID {t.SESSION_BC_EXPERT!r}, rolled through "
                        f"whole episodes)")

    _add_ppo_flags(p.add_argument_group("PPO hyperparameters (jmsra_agents.ppo.PPOConfig)"))
    _add_backend_flags(p)

    g = p.add_argument_group("checkpoints and evaluation")
    g.add_argument("--checkpoint-freq", type=int, default=t.TrainSpec.checkpoint_freq,
                   help="steps between checkpoints (0 = none)")
    g.add_argument("--eval-freq", type=int, default=t.TrainSpec.eval_freq, help="steps between evaluations (0 = none)")
    g.add_argument("--eval-episodes", type=int, default=t.TrainSpec.eval_episodes,
                   help=f"episodes per evaluation (seeds {t.EVAL_SEED}+)")
    g.add_argument("--compare-episodes", type=int, default=t.TrainSpec.compare_episodes,
                   help=f"held-out episodes (seeds {t.COMPARE_SEED}+) of the final comparison table (0 = skip)")
    return p


# ---------------------------------------------------------------------------------------------
# --backend (jmsra_agents.torch_ppo): the flag, the torch-only hyperparameters, the checks of the pair


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    from jmsra_agents.torch_ppo import (BACKENDS, TORCH_BC_LR, TORCH_BC_STEPS, TORCH_N_ENVS, TORCH_ONLY_FIELDS, TORCH_QUICK_BC_STEPS,
                                  TORCH_QUICK_TIMESTEPS, TorchPPOConfig)

    g = p.add_argument_group(
        "backend", f"--backend torch: env, rollouts and updates in one torch process on --device (jmsra_agents.torch_ppo); "
        f"its defaults differ: --n-envs {TORCH_N_ENVS}, --bc-steps {TORCH_BC_STEPS}, --bc-lr {TORCH_BC_LR}, --quick {TORCH_QUICK_TIMESTEPS:,} "
        f"steps after {TORCH_QUICK_BC_STEPS} cloning steps, PPO settings in jmsra_agents.torch_ppo.TORCH_DEFAULTS (docs/training.md, 'The torch backend')")
    g.add_argument("--backend", choices=BACKENDS, default=None,
                   help="sb3 (default; the reference) or torch (with --resume: the run's)")
    from jmsra_agents.torch_marl import ALGORITHMS

    g.add_argument("--algorithm", choices=ALGORITHMS, default=None,
                   help="ppo (default: one policy decides for the team) or decentralised agents sharing one actor, "
                   "each on its own observation (jmsra_agents.torch_marl; torch backend, implied): mappo (critic on "
                   "the team's state) or ippo (critic on the agent's own observation)")
    _add_ppo_flags(g, [f for f in dataclasses.fields(TorchPPOConfig) if f.name in TORCH_ONLY_FIELDS])


def _backend_fields(args: argparse.Namespace, argv: list[str] | None, parser: argparse.ArgumentParser,
                    fields: dict[str, Any]) -> None:
    """Check the flags against the backend (TrainSpecError naming the flag) and apply the torch
    backend's defaults to ``fields`` (a new run's TrainSpec fields)."""
    from jmsra_agents import training as t
    from jmsra_agents.torch_ppo import (TORCH_BC_LR, TORCH_BC_ROUNDS, TORCH_BC_STEPS, TORCH_N_ENVS, TORCH_ONLY_FIELDS,
                                  TORCH_QUICK_BC_ROUNDS, TORCH_QUICK_BC_STEPS, TORCH_QUICK_TIMESTEPS)

    explicit = _explicit_options(parser, argv)
    if args.algorithm not in (None, "ppo"):
        if args.backend not in (None, "torch"):
            raise t.TrainSpecError(f"--algorithm {args.algorithm} runs on the torch backend only (--backend torch)")
        args.backend = "torch"
    backend = args.backend or "sb3"
    if backend == "torch" and "vec" in explicit:
        raise t.TrainSpecError("--vec applies to the sb3 backend only; the torch backend steps its own batched env "
                               "(size it with --n-envs)")
    given = [name for name in TORCH_ONLY_FIELDS if getattr(args, name, None) is not None]
    if backend != "torch" and given:
        raise t.TrainSpecError(f"--{given[0].replace('_', '-')} applies to the torch backend only (--backend torch)")
    if backend == "torch":
        fields["backend"] = "torch"
        if "n_envs" not in explicit:
            fields["n_envs"] = TORCH_N_ENVS
        if "bc_lr" not in explicit:
            fields["bc_lr"] = TORCH_BC_LR
        recipe = ({"total_timesteps": TORCH_QUICK_TIMESTEPS, "bc_steps": TORCH_QUICK_BC_STEPS,
                   "bc_rounds": TORCH_QUICK_BC_ROUNDS} if args.quick else
                  {"bc_steps": TORCH_BC_STEPS, "bc_rounds": TORCH_BC_ROUNDS})
        if t.is_session_scenario(fields.get("env_id", t.TrainSpec.env_id), fields.get("config_overrides")):
            del recipe["bc_rounds"]  # whole episodes of lookahead: the SB3 path's session set
        fields.update({k: v for k, v in recipe.items() if k not in explicit})


def _explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations given on the command line (not left at their defaults)."""
    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    ns, _ = bare.parse_known_args(argv)
    return set(vars(ns))


# flag destination -> TrainSpec field, for the flags that map one to one
_SAME = ("backend", "algorithm", "env_id", "total_timesteps", "n_envs", "vec", "seed", "device", "threads", "logdir", "run_name",
         "force", "features", "action_encoding", "bc_steps", "bc_rounds", "bc_lr", "bc_expert", "checkpoint_freq",
         "eval_freq", "eval_episodes", "compare_episodes", "verbose")


def _spec_fields(args: argparse.Namespace, names: set[str]) -> dict[str, Any]:
    """The TrainSpec fields of the flags in ``names`` (config parsed, negated flags turned)."""
    from jmsra_env.config import parse_overrides

    from jmsra_agents.training import TrainSpecError

    out: dict[str, Any] = {k: getattr(args, k) for k in _SAME if k in names and getattr(args, k) is not None}
    if "config" in names:
        try:
            out["config_overrides"] = parse_overrides(args.config)
        except ValueError as exc:
            raise TrainSpecError(str(exc)) from exc
    if "no_norm_reward" in names:
        out["norm_reward"] = not args.no_norm_reward
    if "no_progress_bar" in names:
        out["progress_bar"] = not args.no_progress_bar
    from jmsra_agents.torch_ppo import TorchPPOConfig  # its fields: PPOConfig's and the torch backend's

    ppo = {f.name: getattr(args, f.name) for f in dataclasses.fields(TorchPPOConfig)
           if getattr(args, f.name, None) is not None}
    if ppo:
        out["ppo"] = ppo
    return out


def spec_from_args(args: argparse.Namespace, argv: list[str] | None, parser: argparse.ArgumentParser):
    """The :class:`TrainSpec` the parsed flags ask for (``--resume``: the run's, with the flags given)."""
    from jmsra_agents import training as t

    if args.resume is not None:
        explicit = _explicit_options(parser, argv) - {"resume", "force", "run_name", "logdir", "quick"}
        return t.resume_spec(args.resume, **_spec_fields(args, explicit))
    fields = _spec_fields(args, set(vars(args)))
    _backend_fields(args, argv, parser, fields)
    fields.setdefault("total_timesteps", t.QUICK_TIMESTEPS if args.quick else t.DEFAULT_TIMESTEPS)
    fields.setdefault("bc_steps", t.QUICK_BC_STEPS if args.quick else t.DEFAULT_BC_STEPS)
    session = t.is_session_scenario(fields.get("env_id", t.TrainSpec.env_id), fields.get("config_overrides"))
    if session:
        fields.setdefault("bc_rounds", t.QUICK_SESSION_BC_ROUNDS if args.quick else t.SESSION_BC_ROUNDS)
    fields.setdefault("bc_rounds", t.QUICK_BC_ROUNDS if args.quick else t.DEFAULT_BC_ROUNDS)
    try:
        fields["ppo"] = t.default_ppo(fields["bc_steps"], session=session, backend=fields.get("backend", "sb3"),
                                      **fields.get("ppo", {}))
    except ValueError as exc:
        raise t.TrainSpecError(str(exc)) from exc
    return t.TrainSpec(**fields)


def validate_args(args: argparse.Namespace) -> None:
    """Check every flag and path before anything is created (``TrainSpecError`` naming the flag).

    Ranges, finiteness and size limits (:func:`jmsra_agents.training.check_values`, the same checks
    ``train()`` makes on a spec), ``--run-name``, and ``--logdir`` (a directory, or creatable in a
    writable directory) for a new run. A new flag adds its check here.
    """
    from jmsra_agents import runs
    from jmsra_agents import training as t

    values = {k: v for k, v in vars(args).items() if v is not None}
    t.check_values(values)
    if args.resume is not None:
        if not isinstance(args.resume, str) or not args.resume or "\0" in args.resume:
            raise t.TrainSpecError(f"--resume must be a path; got {args.resume!r:.80}")
        return
    try:
        if args.run_name is not None:
            runs.check_run_name(args.run_name)
        runs.check_logdir(args.logdir)
    except runs.RunDirError as exc:
        raise t.TrainSpecError(str(exc)) from None


def train_from_argv(argv: list[str] | None, parser, on_error):
    """Parse ``argv`` with ``parser``, validate, train: the run's ``TrainResult``, or an exit status
    (``on_error(message)``'s for bad input; 128 + signal when a signal came before the model was
    built). ``train.py`` and ``jmsra-train-marl`` both run through it."""
    from jmsra_agents.training import TrainingInterrupted, TrainSpecError, train

    args = parser.parse_args(argv)
    import jmsra_env  # noqa: F401 - registers the environments

    try:
        validate_args(args)
        return train(spec_from_args(args, argv, parser))
    except TrainSpecError as exc:
        return on_error(str(exc))
    except TrainingInterrupted as exc:  # before there was a model to save
        print(f"\ninterrupted ({exc}) before the model was built: nothing to save", file=sys.stderr)
        return 128 + exc.signum


def main(argv: list[str] | None = None) -> int:
    """Parse, train, return the exit status (2 on bad input via ``parser.error``)."""
    parser = build_parser()
    result = train_from_argv(argv, parser, parser.error)
    if isinstance(result, int):
        return result
    if result.status == "interrupted" and argv is None:  # the program, saved and exiting: more
        for s in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C during interpreter shutdown changes nothing
            signal.signal(s, signal.SIG_IGN)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
