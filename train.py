#!/usr/bin/env python
"""Train a PPO agent (Stable-Baselines3) on a jmsra_env scenario, logged to TensorBoard.

Quick train + comparison with JMSRA, NL-only and KV-only (about 2-3 minutes on 2 CPU cores)::

    python train.py --quick

A full run, then watch it::

    python train.py --total-timesteps 1000000 --run-name ppo-1m
    tensorboard --logdir runs/ppo-1m/tb

See ``docs/training.md`` for every flag, the run-directory format and RL Zoo usage.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

QUICK_TIMESTEPS = 40_000
QUICK_BC_STEPS = 3_000
DEFAULT_TIMESTEPS = 1_000_000
DEFAULT_BC_STEPS = 10_000
QUICK_BC_ROUNDS = 100_000
DEFAULT_BC_ROUNDS = 300_000
# PPO after behaviour cloning fine-tunes: a small step size and little exploration keep the
# expert-initialised policy (measured: lr 3e-4 / log-std -2.5 lost 1.4 points of gap in 25k steps).
BC_FINE_TUNE = {"learning_rate": 3e-5, "log_std_init": -3.0}
EVAL_SEED = 10_000  # model selection (best_model.zip)
COMPARE_SEED = 20_000  # the final comparison: held out from training and model selection


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help text already explains a ``None`` default."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from agents.encoding import ACTION_ENCODINGS, DEFAULT_ENCODING
    from agents.features import DEFAULT_FEATURES, FEATURE_SETS
    from agents.ppo import DEVICES, PPOConfig

    d = PPOConfig()
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train PPO on a jmsra_env scenario (SB3-ready Box actions), log to TensorBoard, "
        "checkpoint atomically, and compare the result with JMSRA, NL-only and KV-only.",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--env-id", default="jmsra_env/JMSRA-Box-v1",
                   help="registered ID; a Dict-action ID trains on its -Box twin")
    g.add_argument("--total-timesteps", type=int, default=None,
                   help=f"environment steps in total (default {DEFAULT_TIMESTEPS:,}; with --quick "
                   f"{QUICK_TIMESTEPS:,}; with --resume the run's own target)")
    g.add_argument("--quick", action="store_true",
                   help=f"quick run: {QUICK_TIMESTEPS:,} PPO steps after {QUICK_BC_STEPS:,} behaviour-cloning "
                   f"steps on {QUICK_BC_ROUNDS:,} rounds")
    g.add_argument("--n-envs", type=int, default=8, help="parallel environments")
    g.add_argument("--vec", choices=("dummy", "subproc", "native"), default="dummy",
                   help="DummyVecEnv, SubprocVecEnv (spawn) or the batched NumPy env")
    g.add_argument("--seed", type=int, default=0, help="seeds envs, network and BC data")
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto picks CUDA when available")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    g.add_argument("--logdir", default="runs", help="parent directory of run directories")
    g.add_argument("--run-name", default=None, help="default: <variant>-ppo-seed<seed>-<timestamp>")
    g.add_argument("--force", action="store_true", help="replace an existing run directory")
    g.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run (run dir, checkpoint dir or model.zip) with its timestep count")
    g.add_argument("--config", metavar="KEY=VALUE", action="append", default=[],
                   help="env config override (JSON value), e.g. --config n_agents=8 "
                   "--config channel.bandwidth_hz=1e7; repeatable")
    g.add_argument("--no-progress-bar", action="store_true", help="no tqdm/rich progress bar")
    g.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (1 prints the losses)")

    g = p.add_argument_group("observation and pre-training")
    g.add_argument("--features", choices=FEATURE_SETS, default=DEFAULT_FEATURES,
                   help="observation features (agents.features)")
    g.add_argument("--action-encoding", choices=ACTION_ENCODINGS, default=DEFAULT_ENCODING,
                   help="how the network's output becomes the env's Box action (agents.encoding)")
    g.add_argument("--no-norm-reward", action="store_true", help="do not normalise rewards")
    g.add_argument("--bc-steps", type=int, default=None,
                   help=f"behaviour-cloning gradient steps from JMSRA before PPO (0 = pure RL; "
                   f"default {DEFAULT_BC_STEPS})")
    g.add_argument("--bc-rounds", type=int, default=None,
                   help=f"rounds in the behaviour-cloning set (default {DEFAULT_BC_ROUNDS:,}; --quick {QUICK_BC_ROUNDS:,})")
    g.add_argument("--bc-lr", type=float, default=1e-3, help="behaviour-cloning step size")

    g = p.add_argument_group("PPO hyperparameters (agents.ppo.PPOConfig)")
    g.add_argument("--learning-rate", type=float, default=None,
                   help=f"default {d.learning_rate:g}; {BC_FINE_TUNE['learning_rate']:g} after behaviour cloning")
    g.add_argument("--lr-schedule", choices=("constant", "linear"), default=d.lr_schedule, help="linear decays to 0")
    g.add_argument("--n-steps", type=int, default=d.n_steps, help="steps per env and rollout")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size")
    g.add_argument("--n-epochs", type=int, default=d.n_epochs, help="passes over each rollout")
    g.add_argument("--gamma", type=float, default=d.gamma, help="discount (rounds are independent decisions)")
    g.add_argument("--gae-lambda", type=float, default=d.gae_lambda, help="GAE lambda")
    g.add_argument("--clip-range", type=float, default=d.clip_range, help="PPO clip range")
    g.add_argument("--ent-coef", type=float, default=d.ent_coef, help="entropy bonus")
    g.add_argument("--vf-coef", type=float, default=d.vf_coef, help="value-loss weight")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="gradient clipping")
    g.add_argument("--target-kl", type=float, default=d.target_kl, help="early-stop an update past this KL (default: none)")
    g.add_argument("--net-arch", default=",".join(map(str, d.net_arch)), help="hidden sizes, e.g. 256,256")
    g.add_argument("--activation", choices=("tanh", "relu", "elu", "silu"), default=d.activation, help="hidden activation")
    g.add_argument("--log-std-init", type=float, default=None,
                   help=f"initial log std of the actions: default {d.log_std_init:g}; "
                   f"{BC_FINE_TUNE['log_std_init']:g} after behaviour cloning")

    g = p.add_argument_group("checkpoints and evaluation")
    g.add_argument("--checkpoint-freq", type=int, default=100_000, help="steps between checkpoints (0 = none)")
    g.add_argument("--eval-freq", type=int, default=50_000, help="steps between evaluations (0 = none)")
    g.add_argument("--eval-episodes", type=int, default=8, help=f"episodes per evaluation (seeds {EVAL_SEED}+)")
    g.add_argument("--compare-episodes", type=int, default=16,
                   help=f"held-out episodes (seeds {COMPARE_SEED}+) of the final comparison table (0 = skip)")
    return p


def _parse_overrides(items: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    from jmsra_env.config import parse_overrides

    try:
        return parse_overrides(items)
    except ValueError as exc:
        parser.error(str(exc))


def _ppo_config(args, parser):
    from agents.ppo import PPOConfig

    d = PPOConfig()
    for key in ("learning_rate", "log_std_init"):
        if getattr(args, key) is None:
            setattr(args, key, BC_FINE_TUNE[key] if args.bc_steps > 0 else getattr(d, key))
    try:
        arch = tuple(int(h) for h in str(args.net_arch).split(",") if h.strip())
        return PPOConfig(
            learning_rate=args.learning_rate, lr_schedule=args.lr_schedule, n_steps=args.n_steps,
            batch_size=args.batch_size, n_epochs=args.n_epochs, gamma=args.gamma, gae_lambda=args.gae_lambda,
            clip_range=args.clip_range, ent_coef=args.ent_coef, vf_coef=args.vf_coef,
            max_grad_norm=args.max_grad_norm, target_kl=args.target_kl, net_arch=arch,
            activation=args.activation, log_std_init=args.log_std_init,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _explicit_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations given on the command line (not left at their defaults)."""
    import copy

    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    ns, _ = bare.parse_known_args(argv)
    return set(vars(ns))


# What defines a run: on --resume these come from run.json, whatever the command line says.
_RUN_DEFINING = ("env_id", "features", "action_encoding", "config", "no_norm_reward")


def _find_run_dir(model_path: Path) -> Path:
    d = model_path.parent
    return d.parent.parent if d.parent.name == "checkpoints" else d


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    import jmsra_env  # noqa: F401 - registers the environments
    from agents import checkpoint as ck
    from agents.envs import box_env_id, scenario_config
    from agents.ppo import PPOConfig, resolve_device

    # ---- validate everything before anything is written ----------------------------------
    resume_files = None
    if args.resume is not None:
        try:
            resume_files = ck.resolve_run_files(args.resume)
            resume_info = ck.read_run_json(resume_files[2])
        except (FileNotFoundError, ValueError) as exc:
            parser.error(f"--resume: {exc}")
        explicit = _explicit_options(parser, argv)
        for key, value in resume_info.get("args", {}).items():
            if key in _RUN_DEFINING or (key not in explicit and key not in ("resume", "force", "run_name")):
                setattr(args, key, value)
        args.env_id = resume_info.get("requested_env_id", resume_info["env_id"])
        args.features = resume_info["features"]
        args.action_encoding = resume_info.get("action_encoding", "box")
        if "total_timesteps" not in explicit:
            args.total_timesteps = None
        overrides = dict(resume_info.get("config_overrides", {}))
        ppo_cfg = PPOConfig.from_dict(resume_info["ppo"])
        if args.total_timesteps is None:
            args.total_timesteps = int(resume_info.get("total_timesteps", DEFAULT_TIMESTEPS))
    else:
        if args.bc_steps is None:
            args.bc_steps = QUICK_BC_STEPS if args.quick else DEFAULT_BC_STEPS
        if args.bc_rounds is None:
            args.bc_rounds = QUICK_BC_ROUNDS if args.quick else DEFAULT_BC_ROUNDS
        overrides = _parse_overrides(args.config, parser)
        ppo_cfg = _ppo_config(args, parser)
    if args.total_timesteps is None:
        args.total_timesteps = QUICK_TIMESTEPS if args.quick else DEFAULT_TIMESTEPS
    if args.bc_steps is None:
        args.bc_steps = 0
    if args.total_timesteps <= 0:
        parser.error(f"--total-timesteps must be a positive integer; got {args.total_timesteps}")
    for name in ("n_envs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    for name in ("bc_steps", "checkpoint_freq", "eval_freq", "eval_episodes", "compare_episodes"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0; got {getattr(args, name)}")
    if args.bc_steps > 0 and (args.bc_rounds or 0) < 1:
        parser.error(f"--bc-rounds must be >= 1; got {args.bc_rounds}")
    try:
        env_id = box_env_id(args.env_id)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        cfg = scenario_config(env_id, overrides)
    except (ValueError, TypeError) as exc:
        parser.error(f"--config: {exc}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))

    if resume_files is not None:
        run_dir = _find_run_dir(resume_files[0])
    else:
        variant = env_id.split("/")[-1].removesuffix("-v0").removesuffix("-Box")
        name = args.run_name if args.run_name is not None else (
            f"{variant}-ppo-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            parser.error(f"--run-name must be a plain directory name (no '/', not '.' or '..'); got {name!r}")
        run_dir = Path(args.logdir) / name
        if run_dir.exists():
            if not args.force:
                parser.error(f"run directory {run_dir} already exists; pass --force to replace it "
                             f"or --resume {run_dir} to continue it")
    if resume_files is None and run_dir.exists() and args.force:
        shutil.rmtree(run_dir)
    if resume_files is not None and args.total_timesteps <= resume_info.get("num_timesteps", 0):
        parser.error(f"--resume: the run has {resume_info.get('num_timesteps')} steps already; "
                     f"ask for more with --total-timesteps")

    return _train(args, env_id, cfg, overrides, ppo_cfg, device, run_dir, resume_files)


def _train(args, env_id, cfg, overrides, ppo_cfg, device, run_dir: Path, resume_files) -> int:
    import torch
    from stable_baselines3.common.logger import configure

    from agents import checkpoint as ck
    from agents.callbacks import AtomicCheckpointCallback, JMSRAEvalCallback, RoundMetricsCallback
    from agents.envs import make_train_env
    from agents.ppo import make_ppo

    torch.set_num_threads(args.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    tb_dir = run_dir / "tb"
    t_start = time.perf_counter()
    bc_info: dict[str, Any] = {}

    resuming = resume_files is not None
    venv = make_train_env(
        env_id, args.n_envs, args.seed if not resuming else args.seed + 1_000_003, overrides,
        vec=args.vec, features=args.features, action_encoding=args.action_encoding, norm_reward=not args.no_norm_reward, gamma=ppo_cfg.gamma,
    )
    if resuming:
        from agents.checkpoint import load_ppo

        saved = ck.load_vecnormalize(resume_files[1])  # clear error for a corrupt file
        saved.set_venv(venv.venv)  # the fresh stack under the saved statistics
        saved.training = True
        venv = saved
        model = load_ppo(resume_files[0], device=device, env=venv, inference_only=False)
        bc_info = ck.read_run_json(resume_files[2]).get("bc", {})
    else:
        model = make_ppo(venv, ppo_cfg, seed=args.seed, device=device)
    logger = configure(str(tb_dir / "PPO_1"), ["tensorboard"] + (["stdout"] if args.verbose else []))
    model.set_logger(logger)

    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    extra_info: dict[str, Any] = {}

    def run_info(kind: str) -> dict[str, Any]:
        a = {k: v for k, v in vars(args).items()}
        return {
            "format": ck.RUN_FORMAT,
            "kind": kind,
            "env_id": env_id,
            "requested_env_id": args.env_id,
            "config": cfg.to_dict(),
            "config_overrides": overrides,
            "action_form": "box",
            "n_agents": cfg.n_agents,
            "features": args.features,
            "action_encoding": args.action_encoding,
            "obs_pipeline": "agents.features.observation_features -> VecNormalize.normalize_obs",
            "args": a,
            "ppo": ppo_cfg.to_dict(),
            "bc": bc_info,
            "device": device,
            "versions": ck.package_versions(),
            "num_timesteps": int(model.num_timesteps),
            "total_timesteps": int(args.total_timesteps),
            "created": created,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "train_wall_s": round(time.perf_counter() - t_start, 2),
            **extra_info,
        }

    ck.atomic_write_bytes(run_dir / ck.RUN_FILE, ck._json_bytes(run_info("running")))
    print(f"run directory: {run_dir}   (device {device}, {args.n_envs} x {args.vec} envs, env {env_id})")

    eval_cb = None
    callbacks = [RoundMetricsCallback(cfg)]
    if args.eval_freq > 0 and args.eval_episodes > 0:
        eval_cb = JMSRAEvalCallback(
            env_id, overrides, cfg, args.features, args.action_encoding, args.eval_freq, run_dir,
            seeds=range(EVAL_SEED, EVAL_SEED + args.eval_episodes), print_fn=print,
        )
        callbacks.append(eval_cb)
    if args.checkpoint_freq > 0:
        callbacks.append(AtomicCheckpointCallback(run_dir, args.checkpoint_freq, run_info))

    if not resuming and args.bc_steps > 0:
        from agents.bc import expert_dataset, pretrain

        t0 = time.perf_counter()
        data = expert_dataset(cfg, args.bc_rounds, seed=args.seed + 7_777_777, features=args.features,
                              encoding=args.action_encoding)
        stats = pretrain(model, data, args.bc_steps, learning_rate=args.bc_lr, seed=args.seed)
        bc_info = {"steps": args.bc_steps, "rounds": args.bc_rounds, "lr": args.bc_lr,
                   "wall_s": round(time.perf_counter() - t0, 2), **stats}
        for k, v in stats.items():
            logger.record(f"bc/{k}", v)
        print(f"behaviour cloning from JMSRA: {args.bc_steps} steps on {args.bc_rounds:,} rounds in "
              f"{bc_info['wall_s']:.1f} s (action mse {stats['bc_action_mse']:.4f})")
        if eval_cb is not None:
            eval_cb.init_callback(model)
            eval_cb.evaluate()
        logger.dump(0)

    remaining = int(args.total_timesteps - model.num_timesteps)
    interrupted = False
    t_learn = time.perf_counter()
    start_steps = model.num_timesteps
    try:
        model.learn(
            total_timesteps=remaining,
            callback=callbacks,
            reset_num_timesteps=not resuming,
            progress_bar=not args.no_progress_bar,
            tb_log_name="PPO",
        )
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: saving the model before exiting ...", file=sys.stderr)
    learn_s = time.perf_counter() - t_learn
    steps_done = model.num_timesteps - start_steps

    kind = "interrupted" if interrupted else "final"
    if learn_s > 0 and steps_done > 0:
        extra_info["env_steps_per_s"] = round(steps_done / learn_s, 1)
    vn = model.get_vec_normalize_env()
    ck.save_model_files(run_dir, model, vn, run_info(kind))
    ckpt = ck.save_checkpoint(run_dir, model, vn, run_info("checkpoint"))
    logger.close()
    try:
        venv.close()
    except Exception:  # noqa: BLE001 - subprocess workers may already be gone after Ctrl-C
        pass

    sps = steps_done / learn_s if learn_s > 0 else float("nan")
    print(f"\n{'interrupted' if interrupted else 'trained'}: {model.num_timesteps:,} steps "
          f"({steps_done:,} in this session, {sps:,.0f} env-steps/s, {time.perf_counter() - t_start:.0f} s in all)")
    print(f"model:        {run_dir / ck.MODEL_FILE}  (+ {ck.VECNORM_FILE}, {ck.RUN_FILE})")
    if (run_dir / ck.BEST_MODEL_FILE).exists():
        print(f"best model:   {run_dir / ck.BEST_MODEL_FILE}")
    print(f"checkpoint:   {ckpt}")
    print(f"TensorBoard:  tensorboard --logdir {tb_dir}")
    if interrupted:
        print(f"resume with:  python train.py --resume {run_dir}")
        return 130

    if args.compare_episodes > 0:
        print()
        print(_comparison(model, vn, env_id, overrides, cfg, args))
    return 0


def _comparison(model, vn, env_id, overrides, cfg, args) -> str:
    from agents.callbacks import policy_predict_fn
    from agents.evaluation import evaluate_policies, format_table
    from jmsra_env import model as jmodel

    consts = jmodel.model_constants(cfg)
    learned = {"ppo": policy_predict_fn(model, vn, consts, args.features, args.action_encoding)}
    experts = ["jmsra", "nl-only", "kv-only"]
    res = evaluate_policies(env_id, overrides, learned, experts=experts,
                            seeds=range(COMPARE_SEED, COMPARE_SEED + args.compare_episodes))
    return format_table(res, title=f"Held-out comparison ({env_id}, {args.compare_episodes} episodes):")


if __name__ == "__main__":
    sys.exit(main())
