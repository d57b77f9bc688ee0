"""Train a PPO agent: ``train(TrainSpec(...)) -> TrainResult`` (the API behind ``train.py``).

:func:`train` validates the spec (``TrainSpecError`` naming the field, before anything is
written), creates and locks the run directory (:mod:`agents.runs`), optionally pre-trains by
behaviour cloning from JMSRA, runs PPO with TensorBoard metrics, periodic evaluation and atomic
checkpoints, saves the model (SB3 files and the safe format, :mod:`agents.checkpoint`) and
compares it with the experts on held-out seeds. SIGINT and SIGTERM stop it cleanly: the model is
saved and the result says ``status="interrupted"`` (exit code 130 / 143).

Resuming: :func:`resume_spec` builds the spec of a saved run (``--resume``) and refuses changes to
what defines the run. No argparse here; ``agents.cli_train`` is the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jmsra_env import evaluation as ev

from .encoding import DEFAULT_ENCODING
from .features import DEFAULT_FEATURES
from .ppo import PPOConfig

__all__ = [
    "TrainSpec",
    "TrainResult",
    "TrainSpecError",
    "TrainingInterrupted",
    "train",
    "resume_spec",
    "default_ppo",
    "is_session_scenario",
    "SESSION_GAMMA",
    "EVAL_SEED",
    "COMPARE_SEED",
]

DEFAULT_TIMESTEPS = 1_000_000
DEFAULT_BC_STEPS = 10_000
DEFAULT_BC_ROUNDS = 300_000
QUICK_TIMESTEPS = 40_000
QUICK_BC_STEPS = 3_000
QUICK_BC_ROUNDS = 100_000
# PPO after behaviour cloning fine-tunes: a small step size and little exploration keep the
# expert-initialised policy (measured: lr 3e-4 / log-std -2.5 lost 1.4 points of gap in 25k steps).
BC_FINE_TUNE = {"learning_rate": 3e-5, "log_std_init": -3.0}
EVAL_SEED = ev.SELECTION_SEED  # model selection (best_model.zip)
COMPARE_SEED = ev.HELD_OUT_SEED  # the final comparison: held out from training and model selection
RESUME_SEED_OFFSET = 1_000_003  # a resumed session's envs draw rounds the first session did not
BC_SEED_OFFSET = 7_777_777  # the behaviour-cloning rounds differ from the training rounds
COMPARE_EXPERTS = ("jmsra", "nl-only", "kv-only")
# Sessions (docs/sessions.md): a KV message fills the receiver's pool for later rounds, so the
# discount matters; 0.9: a horizon of ~10 of the 64 rounds, longer than the lookahead expert's
# H = 6 (agents.marl uses the same). Single rounds are contextual bandits: gamma 0 (agents.ppo).
SESSION_GAMMA = 0.9
SESSION_COMPARE_EXPERTS = ("jmsra", "nl-only", "pool-aware")
# Behaviour cloning on a session: the best causal expert, rolled through whole episodes
# (docs/training.md, "Training on sessions": lookahead costs ~0.35 s a batch step).
SESSION_BC_EXPERT = "lookahead"
SESSION_BC_ROUNDS = 32_768  # 512 episodes of 64 rounds: ~2-5 min of lookahead (docs/sessions.md, "Training on sessions")
QUICK_SESSION_BC_ROUNDS = 4_096

# What defines a run: a resumed run keeps these (resume_spec refuses a different value).
RUN_DEFINING = ("backend", "env_id", "config_overrides", "features", "action_encoding", "norm_reward", "ppo",
                "bc_steps", "bc_rounds", "bc_lr", "bc_expert")


class TrainSpecError(ValueError):
    """The spec cannot be run as given (bad value, run directory taken, resume conflict)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during training (``signum`` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def default_ppo(bc_steps: int, *, session: bool = False, backend: str = "sb3", **changes: Any) -> PPOConfig:
    """The PPO defaults of a run: fine-tuning step size and noise after behaviour cloning; on a
    session scenario the discount :data:`SESSION_GAMMA` (a given ``gamma`` wins). ``backend="torch"``:
    :func:`agents.torch_ppo.default_torch_ppo` (a :class:`~agents.torch_ppo.TorchPPOConfig`)."""
    if backend == "torch":
        from .torch_ppo import default_torch_ppo

        return default_torch_ppo(bc_steps, session=session, **changes)
    base = PPOConfig(**BC_FINE_TUNE) if bc_steps > 0 else PPOConfig()
    if session:
        base = base.replace(gamma=SESSION_GAMMA)
    return base.replace(**changes)


def is_session_scenario(env_id: str, config_overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether ``env_id`` with ``config_overrides`` is a session scenario (False when they do not
    resolve: validation reports that later, naming the field)."""
    from .envs import box_env_id, scenario_config

    try:
        return bool(scenario_config(box_env_id(env_id), dict(config_overrides or {})).session.enabled)
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class TrainSpec:
    """Everything a training run needs (the CLI flags, as data)."""

    env_id: str = "jmsra_env/JMSRA-Box-v1"  # a Dict-action ID trains on its -Box twin
    config_overrides: Mapping[str, Any] = field(default_factory=dict)  # env config, dotted keys
    total_timesteps: int = DEFAULT_TIMESTEPS  # with resume: the target, counting the steps done
    n_envs: int = 8
    vec: str = "dummy"  # "dummy", "subproc" (spawn) or "native"
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # torch CPU threads
    logdir: str = "runs"
    run_name: str | None = None  # default: <variant>-ppo-seed<seed>-<timestamp>
    force: bool = False  # replace an existing run directory (a run, not held by a live process)
    resume: str | None = None  # a run dir, checkpoint dir or model.zip (build with resume_spec)
    features: str = DEFAULT_FEATURES
    action_encoding: str = DEFAULT_ENCODING
    norm_reward: bool = True
    bc_steps: int = DEFAULT_BC_STEPS
    bc_rounds: int | None = None  # None: DEFAULT_BC_ROUNDS, or SESSION_BC_ROUNDS on a session scenario
    bc_lr: float = 1e-3
    bc_expert: str | None = None  # None: "jmsra"; on a session scenario SESSION_BC_EXPERT (rolled episodes)
    ppo: PPOConfig | None = None  # None: default_ppo(bc_steps)
    checkpoint_freq: int = 100_000  # 0 = none
    eval_freq: int = 50_000  # 0 = none
    eval_episodes: int = 8
    compare_episodes: int = 16  # 0 = no final comparison
    progress_bar: bool = True
    verbose: int = 0  # SB3 verbosity
    backend: str = "sb3"  # "sb3" (the reference) or "torch" (agents.torch_ppo: env, rollouts, updates on one device)

    def __post_init__(self) -> None:
        if self.bc_rounds is None:  # whole episodes of lookahead on sessions: far fewer rounds
            session = is_session_scenario(self.env_id, self.config_overrides)
            object.__setattr__(self, "bc_rounds", SESSION_BC_ROUNDS if session else DEFAULT_BC_ROUNDS)

    def ppo_config(self) -> PPOConfig:
        if self.ppo is not None:
            if self.backend == "torch" and type(self.ppo) is PPOConfig:  # its fields; the torch levers default
                from .torch_ppo import TorchPPOConfig

                return TorchPPOConfig.from_dict(self.ppo.to_dict())
            return self.ppo
        return default_ppo(self.bc_steps, session=is_session_scenario(self.env_id, self.config_overrides),
                           backend=self.backend)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["config_overrides"] = dict(self.config_overrides)
        d["ppo"] = self.ppo_config().to_dict()
        return d



def _saved_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    """The spec fields a ``run.json`` records (this format's ``args``, or the older CLI names)."""
    args = dict(info.get("args", {}))
    known = {f.name for f in dataclasses.fields(TrainSpec)}
    out = {k: v for k, v in args.items() if k in known and k not in ("ppo", "resume", "force", "run_name")}
    if "no_norm_reward" in args:
        out["norm_reward"] = not args["no_norm_reward"]
    if "no_progress_bar" in args:
        out["progress_bar"] = not args["no_progress_bar"]
    out.update(env_id=info.get("requested_env_id", info["env_id"]), features=info["features"],
               action_encoding=info.get("action_encoding", "box"),
               config_overrides=dict(info.get("config_overrides", {})),
               ppo=_ppo_class(args.get("backend", "sb3")).from_dict(info["ppo"]),
               total_timesteps=int(info.get("total_timesteps", DEFAULT_TIMESTEPS)))
    out["backend"] = args.get("backend", "sb3")  # runs made before the torch backend: SB3
    bc = info.get("bc", {})
    out.setdefault("bc_steps", bc.get("steps", 0) if bc else 0)
    return out


def _ppo_class(backend: str) -> type:
    if backend == "torch":
        from .torch_ppo import TorchPPOConfig

        return TorchPPOConfig
    return PPOConfig


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    status: str  # "final" or "interrupted"
    num_timesteps: int
    steps_this_session: int
    model_path: Path  # the run's model.zip (policy.json / policy.safetensors next to it)
    checkpoint_path: Path | None
    best_model_path: Path | None
    metrics: dict[str, float]  # last evaluation, best latency, throughput, comparison figures
    comparison: str | None = None  # the held-out comparison table
    signal: int | None = None  # SIGINT / SIGTERM when interrupted

    @property
    def exit_code(self) -> int:
        """0, or 128 + the signal that stopped it (130 for SIGINT, 143 for SIGTERM)."""
        if self.status != "interrupted":
            return 0
        return 128 + int(self.signal or signal.SIGINT)


# ---------------------------------------------------------------------------------------------
# Resume


def resume_spec(path: str, **changes: Any) -> TrainSpec:
    """The spec that continues the run at ``path`` (run dir, checkpoint dir or ``model.zip``).

    ``changes`` (e.g. ``total_timesteps``, ``n_envs``, ``device``) replace the run's own values,
    except what defines the run (:data:`RUN_DEFINING`: env, config, features, action encoding,
    reward normalisation, PPO and behaviour-cloning settings): a different value there is a
    :class:`TrainSpecError` naming the flag. ``total_timesteps`` defaults to the run's target.
    """
    from . import runs

    try:
        point = runs.find_resume_point(path)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainSpecError(f"--resume: {exc}") from exc
    saved = _saved_fields(point.run_info)
    if isinstance(changes.get("ppo"), Mapping):  # PPO field changes, as the CLI gives them
        known = {f.name for f in dataclasses.fields(saved["ppo"])}
        alien = [k for k, v in changes["ppo"].items() if k not in known and v is not None]
        if alien:
            raise TrainSpecError(f"--resume: {_flag(alien[0])} applies to the torch backend only; the run uses the "
                                 f"{saved['backend']} backend")
        changes["ppo"] = saved["ppo"].replace(**changes["ppo"])
    for key, value in changes.items():
        if key in RUN_DEFINING and _differs(key, value, saved):
            raise TrainSpecError(f"--resume: {_conflict(key, value, saved)} conflicts with the run's setting; a "
                                 f"resumed run keeps its environment, config, features, action encoding, reward "
                                 f"normalisation, PPO and behaviour-cloning settings (start a new run to change them)")
    fields = {**saved, **{k: v for k, v in changes.items() if k not in RUN_DEFINING}}
    return TrainSpec(**{**fields, "resume": str(path), "force": False, "run_name": None})


def _conflict(key: str, value: Any, saved: Mapping[str, Any]) -> str:
    """``--flag <given> (run: <saved>)`` for the first differing setting."""
    if key == "ppo":
        mine, theirs = value.to_dict(), saved["ppo"].to_dict()
        name = next(k for k in mine if mine[k] != theirs[k])
        return f"{_flag(name)} {mine[name]!r} (run: {theirs[name]!r})"
    if key == "norm_reward":
        return f"--no-norm-reward {not value} (run: {not saved[key]})"
    flag = "--config" if key == "config_overrides" else _flag(key)
    return f"{flag} {value!r} (run: {saved.get(key)!r})"


def _differs(key: str, value: Any, saved: Mapping[str, Any]) -> bool:
    if key == "ppo":
        return value is not None and value != saved["ppo"]
    if key == "config_overrides":
        return dict(value) != dict(saved.get(key, {}))
    if key == "env_id":
        from .envs import box_env_id

        try:
            return box_env_id(value) != box_env_id(saved[key])
        except ValueError:
            return True
    return value != saved.get(key)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------------------------------------
# Validation: everything checked before anything is written


@dataclass
class _Plan:
    spec: TrainSpec
    env_id: str
    cfg: Any
    ppo: PPOConfig
    device: str
    resume: Any  # runs.ResumePoint or None
    run_name: str


def _validate(spec: TrainSpec) -> _Plan:
    from . import runs
    from .encoding import ACTION_ENCODINGS
    from .envs import VEC_KINDS, box_env_id, scenario_config
    from .features import FEATURE_SETS
    from .ppo import resolve_device

    _validate_backend(spec)
    if not isinstance(spec.total_timesteps, int) or spec.total_timesteps <= 0:
        raise TrainSpecError(f"--total-timesteps must be a positive integer; got {spec.total_timesteps}")
    for name in ("n_envs", "threads"):
        if getattr(spec, name) < 1:
            raise TrainSpecError(f"{_flag(name)} must be >= 1; got {getattr(spec, name)}")
    for name in ("bc_steps", "checkpoint_freq", "eval_freq", "eval_episodes", "compare_episodes"):
        if getattr(spec, name) < 0:
            raise TrainSpecError(f"{_flag(name)} must be >= 0; got {getattr(spec, name)}")
    if spec.bc_steps > 0 and (spec.bc_rounds or 0) < 1:
        raise TrainSpecError(f"--bc-rounds must be >= 1; got {spec.bc_rounds}")
    for name, allowed in (("vec", VEC_KINDS), ("features", FEATURE_SETS), ("action_encoding", ACTION_ENCODINGS)):
        if getattr(spec, name) not in allowed:
            raise TrainSpecError(f"{_flag(name)} must be one of {allowed}; got {getattr(spec, name)!r}")
    try:
        env_id = box_env_id(spec.env_id)
    except ValueError as exc:
        raise TrainSpecError(str(exc)) from exc
    try:
        cfg = scenario_config(env_id, dict(spec.config_overrides))
    except (ValueError, TypeError) as exc:
        raise TrainSpecError(f"--config: {exc}") from exc
    try:
        device = resolve_device(spec.device)
    except ValueError as exc:
        raise TrainSpecError(str(exc)) from exc
    if spec.bc_expert is not None and spec.bc_steps > 0:
        from jmsra_env.policies import make_policy

        try:
            make_policy(spec.bc_expert, config=cfg)
        except ValueError as exc:
            raise TrainSpecError(f"--bc-expert: {exc}") from exc
    resume = _validate_resume(spec) if spec.resume is not None else None
    name = spec.run_name if spec.run_name is not None else runs.default_run_name(env_id, spec.seed)
    try:
        runs.check_run_name(name)
    except runs.RunDirError as exc:
        raise TrainSpecError(str(exc)) from exc
    return _Plan(spec, env_id, cfg, spec.ppo_config(), device, resume, name)


def _validate_backend(spec: TrainSpec) -> None:
    """The backend and the settings that only one backend has (before anything is created)."""
    from .torch_ppo import BACKENDS, TORCH_ONLY_FIELDS, TorchPPOConfig

    if spec.backend not in BACKENDS:
        raise TrainSpecError(f"--backend must be one of {BACKENDS}; got {spec.backend!r}")
    if spec.backend == "torch" and spec.vec != TrainSpec.vec:
        raise TrainSpecError(f"--vec {spec.vec!r} applies to the sb3 backend only; the torch backend steps its own "
                             f"batched env (size it with --n-envs)")
    if spec.backend == "sb3" and isinstance(spec.ppo, TorchPPOConfig):
        changed = [f for f in TORCH_ONLY_FIELDS if getattr(spec.ppo, f) != getattr(TorchPPOConfig(), f)]
        raise TrainSpecError(f"{_flag(changed[0]) if changed else 'a TorchPPOConfig'} applies to the torch backend "
                             f"only (--backend torch)")


def _validate_resume(spec: TrainSpec):
    from . import runs

    try:
        point = runs.find_resume_point(spec.resume)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainSpecError(f"--resume: {exc}") from exc
    saved = _saved_fields(point.run_info)
    for key in RUN_DEFINING:
        value = getattr(spec, key) if key != "ppo" else spec.ppo_config()
        if _differs(key, value, saved):
            raise TrainSpecError(f"--resume: {_conflict(key, value, saved)} differs from the run; "
                                 f"build the spec with agents.training.resume_spec")
    if spec.total_timesteps <= point.num_timesteps:
        raise TrainSpecError(f"--resume: the run has {point.num_timesteps} steps already; "
                             f"ask for more with --total-timesteps")
    return point


# ---------------------------------------------------------------------------------------------
# Signals


@contextlib.contextmanager
def _stop_on_signals(caught: dict[str, int | None]) -> Iterator[None]:
    """SIGINT / SIGTERM raise :class:`TrainingInterrupted` once; later ones are only noted.

    Only in the main thread (a sweep may call :func:`train` from another thread: no handlers).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if caught["signal"] is not None:
            print("(already stopping: saving the model, please wait)", file=sys.stderr)
            return
        caught["signal"] = signum
        raise TrainingInterrupted(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)


# ---------------------------------------------------------------------------------------------
# The run


def train(spec: TrainSpec, *, log: Callable[[str], None] | None = print) -> TrainResult:
    """Run ``spec``; see the module docstring. ``log=None`` prints nothing."""
    from . import runs

    plan = _validate(spec)
    log = log or (lambda _msg: None)
    try:
        if plan.resume is not None:
            lock = runs.lock_run_dir(plan.resume.run_dir)
        else:
            lock = runs.open_run_dir(spec.logdir, plan.run_name, force=spec.force)
    except runs.RunDirError as exc:
        raise TrainSpecError(str(exc)) from exc
    with lock:
        for p in runs.clean_run_dir(lock.run_dir):
            log(f"removed what an interrupted save left: {p}")
        if plan.resume is not None:
            unit = plan.resume.unit
            log(f"resuming from {unit.policy_path if spec.backend == 'torch' else unit.model_path} at "
                f"{plan.resume.num_timesteps:,} steps"
                + "".join(f"\n  passed over {r}" for r in plan.resume.passed_over))
        caught: dict[str, int | None] = {"signal": None}
        with _stop_on_signals(caught):
            if spec.backend == "torch":
                from .torch_ppo import TorchRun

                return TorchRun(plan, lock.run_dir, log, caught).run()
            return _Run(plan, lock.run_dir, log, caught).run()


class _Run:
    """One training session in a locked run directory."""

    def __init__(self, plan: _Plan, run_dir: Path, log: Callable[[str], None], caught: dict):
        self.plan, self.spec, self.run_dir, self.log, self.caught = plan, plan.spec, run_dir, log, caught
        self.t_start = time.perf_counter()
        self.created = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.extra_info: dict[str, Any] = {}
        self.bc_info: dict[str, Any] = dict(plan.resume.run_info.get("bc", {})) if plan.resume else {}
        self.eval_cb = None

    def run(self) -> TrainResult:
        from . import checkpoint as ck

        try:
            self._build()
        except KeyboardInterrupt as exc:
            raise TrainingInterrupted(getattr(exc, "signum", signal.SIGINT)) from None
        ck.atomic_write_bytes(self.run_dir / ck.RUN_FILE, ck._json_bytes(self.run_info("running")))
        self.log(f"run directory: {self.run_dir}   (device {self.plan.device}, {self.spec.n_envs} x "
                 f"{self.spec.vec} envs, env {self.plan.env_id})")
        callbacks = self._callbacks()
        interrupted = not self._behaviour_cloning()
        steps_before, learn_s = self.model.num_timesteps, 0.0
        if not interrupted:
            t_learn = time.perf_counter()
            interrupted = not self._learn(callbacks)
            learn_s = time.perf_counter() - t_learn
        return self._finish(interrupted, self.model.num_timesteps - steps_before, learn_s)

    # -- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        import torch
        from stable_baselines3.common.logger import configure

        from . import checkpoint as ck
        from .envs import make_train_env
        from .ppo import make_ppo

        spec, plan = self.spec, self.plan
        torch.set_num_threads(spec.threads)
        resuming = plan.resume is not None
        venv = make_train_env(
            plan.env_id, spec.n_envs, spec.seed + RESUME_SEED_OFFSET if resuming else spec.seed,
            dict(spec.config_overrides), vec=spec.vec, features=spec.features,
            action_encoding=spec.action_encoding, norm_reward=spec.norm_reward, gamma=plan.ppo.gamma,
        )
        if resuming:
            saved = ck.load_vecnormalize(plan.resume.unit.vecnorm_path)  # clear error for a corrupt file
            saved.set_venv(venv.venv)  # the fresh stack under the saved statistics
            saved.training = True
            venv = saved
            model = ck.load_ppo(plan.resume.unit.model_path, device=plan.device, env=venv, inference_only=False)
        else:
            model = make_ppo(venv, plan.ppo, seed=spec.seed, device=plan.device)
        self.venv, self.model = venv, model
        self.tb_dir = self.run_dir / "tb"
        self.logger = configure(str(self.tb_dir / "PPO_1"), ["tensorboard"] + (["stdout"] if spec.verbose else []))
        model.set_logger(self.logger)

    def run_info(self, kind: str) -> dict[str, Any]:
        from . import checkpoint as ck

        plan, cfg = self.plan, self.plan.cfg
        return {
            "format": ck.RUN_FORMAT,
            "kind": kind,
            "env_id": plan.env_id,
            "requested_env_id": self.spec.env_id,
            "config": cfg.to_dict(),
            "config_overrides": dict(self.spec.config_overrides),
            "action_form": "box",
            "n_agents": cfg.n_agents,
            "features": self.spec.features,
            "action_encoding": self.spec.action_encoding,
            "obs_pipeline": "agents.features.observation_features -> VecNormalize.normalize_obs",
            "args": self.spec.to_dict(),
            "ppo": plan.ppo.to_dict(),
            "bc": self.bc_info,
            "device": plan.device,
            "versions": ck.package_versions(),
            "num_timesteps": int(self.model.num_timesteps),
            "total_timesteps": int(self.spec.total_timesteps),
            "created": self.created,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "train_wall_s": round(time.perf_counter() - self.t_start, 2),
            **self.extra_info,
        }

    def _callbacks(self) -> list:
        from .callbacks import AtomicCheckpointCallback, JMSRAEvalCallback, RoundMetricsCallback

        spec, plan = self.spec, self.plan
        callbacks = [RoundMetricsCallback(plan.cfg)]
        if spec.eval_freq > 0 and spec.eval_episodes > 0:
            self.eval_cb = JMSRAEvalCallback(
                plan.env_id, dict(spec.config_overrides), plan.cfg, spec.features, spec.action_encoding,
                spec.eval_freq, self.run_dir, seeds=range(EVAL_SEED, EVAL_SEED + spec.eval_episodes),
                print_fn=self.log, **({"experts": SESSION_COMPARE_EXPERTS} if plan.cfg.session.enabled else {}),
            )
            callbacks.append(self.eval_cb)
        if spec.checkpoint_freq > 0:
            callbacks.append(AtomicCheckpointCallback(self.run_dir, spec.checkpoint_freq, self.run_info))
        return callbacks

    # -- training -----------------------------------------------------------------------------

    def _behaviour_cloning(self) -> bool:
        """Pre-train from JMSRA (the steps a resumed run still owes); False if interrupted."""
        from .bc import expert_dataset, pretrain, session_expert_dataset

        spec = self.spec
        done = int(self.bc_info.get("steps_done", self.bc_info.get("steps", 0))) if self.plan.resume else 0
        if spec.bc_steps <= done or self.model.num_timesteps > 0:
            return True
        t0 = time.perf_counter()
        cfg = self.plan.cfg
        session = bool(cfg.session.enabled)
        expert = spec.bc_expert or (SESSION_BC_EXPERT if session else "jmsra")
        try:
            if session:  # whole episodes rolled with the expert (its receiver state)
                episodes = -(-spec.bc_rounds // cfg.episode_rounds)
                data = session_expert_dataset(cfg, episodes, seed=spec.seed + BC_SEED_OFFSET, features=spec.features,
                                              encoding=spec.action_encoding, expert=expert, gamma=self.plan.ppo.gamma)
            else:
                data = expert_dataset(cfg, spec.bc_rounds, seed=spec.seed + BC_SEED_OFFSET,
                                      features=spec.features, encoding=spec.action_encoding, expert=expert)
            stats = pretrain(self.model, data, spec.bc_steps - done, learning_rate=spec.bc_lr, seed=spec.seed + done)
        except KeyboardInterrupt:  # while drawing and solving the rounds
            stats = {"steps_done": 0, "interrupted": True}
        stats["steps_done"] = done + int(stats.get("steps_done", 0))
        interrupted = bool(stats.pop("interrupted", False))
        self.bc_info = {"steps": spec.bc_steps, "rounds": spec.bc_rounds, "lr": spec.bc_lr, "expert": expert,
                        "wall_s": round(time.perf_counter() - t0 + self.bc_info.get("wall_s", 0.0), 2), **stats}
        if interrupted:
            self.log(f"\ninterrupted during behaviour cloning after {stats['steps_done']} of {spec.bc_steps} steps: "
                     f"saving; --resume finishes the remaining steps")
            return False
        for k, v in stats.items():
            self.logger.record(f"bc/{k}", v)
        self.log(f"behaviour cloning from {expert}: {spec.bc_steps} steps on {spec.bc_rounds:,} rounds in "
                 f"{self.bc_info['wall_s']:.1f} s (action mse {stats.get('bc_action_mse', float('nan')):.4f})")
        try:
            if self.eval_cb is not None:
                self.eval_cb.init_callback(self.model)
                self.eval_cb.evaluate()
        except KeyboardInterrupt:
            return False
        self.logger.dump(0)
        return True

    def _learn(self, callbacks: list) -> bool:
        """PPO up to the target; False if a signal stopped it."""
        try:
            self.model.learn(
                total_timesteps=int(self.spec.total_timesteps - self.model.num_timesteps),
                callback=callbacks,
                reset_num_timesteps=self.plan.resume is None,
                progress_bar=self.spec.progress_bar,
                tb_log_name="PPO",
            )
        except KeyboardInterrupt as exc:
            if self.caught["signal"] is None:  # raised by other code (a test, an IDE)
                self.caught["signal"] = getattr(exc, "signum", signal.SIGINT)
            return False
        return True

    def _finish(self, interrupted: bool, steps_done: int, learn_s: float) -> TrainResult:
        from . import checkpoint as ck

        if interrupted:
            if self.caught["signal"] is None:
                self.caught["signal"] = signal.SIGINT
            self.log(f"\ninterrupted ({signal.Signals(self.caught['signal']).name}): saving the model before exiting ...")
        kind = "interrupted" if interrupted else "final"
        if learn_s > 0 and steps_done > 0:
            self.extra_info["env_steps_per_s"] = round(steps_done / learn_s, 1)
        vn = self.model.get_vec_normalize_env()
        with ck.deferred_signals(redeliver=False):  # a second Ctrl-C waits for the save
            ckpt = ck.save_checkpoint(self.run_dir, self.model, vn, self.run_info("checkpoint"))
            ck.save_model_files(self.run_dir, self.model, vn, self.run_info(kind))
        self.logger.close()
        try:
            self.venv.close()
        except Exception:  # noqa: BLE001 - subprocess workers may already be gone after Ctrl-C
            pass
        self._report(interrupted, steps_done, learn_s, ckpt)
        comparison, metrics = None, self._metrics()
        if not interrupted and self.spec.compare_episodes > 0:
            try:
                comparison, figures = _comparison(self.model, vn, self.plan, self.spec.compare_episodes)
            except KeyboardInterrupt:
                self.log("comparison skipped (interrupted); the model is saved")
            else:
                metrics.update(figures)
                self.log("\n" + comparison)
        best = self.run_dir / ck.BEST_MODEL_FILE
        return TrainResult(
            run_dir=self.run_dir, status=kind, num_timesteps=int(self.model.num_timesteps),
            steps_this_session=int(steps_done), model_path=self.run_dir / ck.MODEL_FILE, checkpoint_path=ckpt,
            best_model_path=best if best.is_file() else None, metrics=metrics, comparison=comparison,
            signal=self.caught["signal"] if interrupted else None,
        )

    def _report(self, interrupted: bool, steps_done: int, learn_s: float, ckpt: Path) -> None:
        from . import checkpoint as ck

        sps = steps_done / learn_s if learn_s > 0 else float("nan")
        self.log(f"\n{'interrupted' if interrupted else 'trained'}: {self.model.num_timesteps:,} steps "
                 f"({steps_done:,} in this session, {sps:,.0f} env-steps/s, "
                 f"{time.perf_counter() - self.t_start:.0f} s in all)")
        self.log(f"model:        {self.run_dir / ck.MODEL_FILE}  (+ {ck.VECNORM_FILE}, {ck.WEIGHTS_FILE}, "
                 f"{ck.POLICY_FILE}, {ck.RUN_FILE})")
        if (self.run_dir / ck.BEST_MODEL_FILE).exists():
            self.log(f"best model:   {self.run_dir / ck.BEST_MODEL_FILE}")
        self.log(f"checkpoint:   {ckpt}")
        self.log(f"TensorBoard:  tensorboard --logdir {self.tb_dir}")
        if interrupted:
            self.log(f"resume with:  python train.py --resume {self.run_dir}")

    def _metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"num_timesteps": float(self.model.num_timesteps),
                                 "train_wall_s": round(time.perf_counter() - self.t_start, 2)}
        if "env_steps_per_s" in self.extra_info:
            out["env_steps_per_s"] = float(self.extra_info["env_steps_per_s"])
        if self.eval_cb is not None and self.eval_cb.history:
            last = self.eval_cb.history[-1]
            out.update({f"eval/{k}": float(v) for k, v in last.items() if isinstance(v, (int, float)) and k != "best"})
            out["eval/best_latency_s"] = float(self.eval_cb.best_latency_s)
        return out


def _comparison(model, vn, plan: _Plan, episodes: int) -> tuple[str, dict[str, float]]:
    """The held-out comparison table (seeds COMPARE_SEED+) and its figures (the evaluation core's
    statistics, the same as evaluate.py's)."""
    from .evaluation import live_model_policy

    spec = plan.spec
    policy = live_model_policy(model, vn, plan.cfg, spec.features, spec.action_encoding, label="ppo")
    return comparison_table(policy, plan, episodes)


def comparison_table(policy, plan: _Plan, episodes: int) -> tuple[str, dict[str, float]]:
    """The held-out comparison of an evaluation ``policy`` labelled ``ppo`` (both backends)."""
    from .evaluation import compare_with_experts, format_table

    spec = plan.spec
    experts = SESSION_COMPARE_EXPERTS if plan.cfg.session.enabled else COMPARE_EXPERTS
    res = compare_with_experts(plan.env_id, dict(spec.config_overrides), [policy], experts=experts,
                               episodes=episodes, seed=COMPARE_SEED, reference="jmsra")
    figures = {f"compare/{name}_latency_s": res.mean(name) for name in ("ppo", *experts)}
    figures["compare/ppo_gap_to_jmsra_pct"] = float(res.row("ppo")["gap_pct"])
    return format_table(res, title=f"Held-out comparison ({plan.env_id}, {episodes} episodes):"), figures
