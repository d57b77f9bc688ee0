"""Train a PPO agent: ``train(TrainSpec(...)) -> TrainResult`` (the API behind ``train.py``).

:func:`train` validates the spec (``TrainSpecError`` naming the field, before anything is
written), creates and locks the run directory (:mod:`jmsra_agents.runs`), optionally pre-trains by
behaviour cloning from JMSRA, runs PPO with TensorBoard metrics, periodic evaluation and atomic
checkpoints, saves the model (SB3 files and the safe format, :mod:`jmsra_agents.checkpoint`) and
compares it with the experts on held-out seeds. SIGINT and SIGTERM stop it cleanly: the model is
saved and the result says ``status="interrupted"`` (exit code 130 / 143).

Resuming: :func:`resume_spec` builds the spec of a saved run (``--resume``) and refuses changes to
what defines the run. No argparse here; ``jmsra_agents.cli_train`` is the command line.
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
    "validate_spec",
    "check_values",
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
# H = 6 (jmsra_agents.marl uses the same). Single rounds are contextual bandits: gamma 0 (jmsra_agents.ppo).
SESSION_GAMMA = 0.9
SESSION_COMPARE_EXPERTS = ("jmsra", "nl-only", "pool-aware")
# Behaviour cloning on a session: the best causal expert, rolled through whole episodes
# (docs/training.md, "Training on sessions": lookahead costs ~0.35 s a batch step).
SESSION_BC_EXPERT = "lookahead"
SESSION_BC_ROUNDS = 32_768  # 512 episodes of 64 rounds: ~2-5 min of lookahead (docs/sessions.md, "Training on sessions")
QUICK_SESSION_BC_ROUNDS = 4_096

# What defines a run: a resumed run keeps these (resume_spec refuses a different value).
RUN_DEFINING = ("backend", "algorithm", "env_id", "config_overrides", "features", "action_encoding", "norm_reward", "ppo",
                "bc_steps", "bc_rounds", "bc_lr", "bc_expert")


# Limits of the values a run accepts (docs/training.md, "Flag limits"): beyond them a value is a
# typo or an attack, refused by name before anything is created or allocated.
MAX_SEED = 2**31 - 1  # seeds: [0, 2**31 - 1] (offsets for resume / BC / env ranks stay below 2**32)
MAX_TOTAL_TIMESTEPS = 10**12
MAX_N_ENVS = 1024
MAX_TORCH_N_ENVS = 2**20  # --backend torch: one batched env on the device (the rollout limit below still holds)
MAX_THREADS = 1024
MAX_BC_ROUNDS = 10_000_000  # rounds of the behaviour-cloning set (held in memory)
MAX_BC_STEPS = 10**9
MAX_EPISODES = 100_000  # --eval-episodes, --compare-episodes
MAX_FREQ = 10**12  # --checkpoint-freq, --eval-freq
MAX_ROLLOUT_STEPS = 2**22  # n_steps x n_envs: the rollout buffer (4.2 M steps)
MAX_LOG_STD = 20.0  # |--log-std-init|: exp(20) is already 4.9e8 times the action range

_INT_LIMITS = {  # flag -> (min, max)
    "total_timesteps": (1, MAX_TOTAL_TIMESTEPS), "n_envs": (1, MAX_N_ENVS), "threads": (1, MAX_THREADS),
    "seed": (0, MAX_SEED), "bc_steps": (0, MAX_BC_STEPS), "bc_rounds": (0, MAX_BC_ROUNDS),  # >= 1 with BC
    "checkpoint_freq": (0, MAX_FREQ), "eval_freq": (0, MAX_FREQ), "eval_episodes": (0, MAX_EPISODES),
    "compare_episodes": (0, MAX_EPISODES), "verbose": (0, 2),
    "n_steps": (1, MAX_ROLLOUT_STEPS), "batch_size": (1, MAX_ROLLOUT_STEPS), "n_epochs": (1, 10_000),
}
_POSITIVE_FLOATS = ("learning_rate", "clip_range", "max_grad_norm", "bc_lr")
_NON_NEGATIVE_FLOATS = ("ent_coef", "vf_coef", "desired_kl", "bc_coef")  # the last two: --backend torch
_UNIT_FLOATS = ("gamma", "gae_lambda", "bc_coef_decay")


class TrainSpecError(ValueError):
    """The spec cannot be run as given (bad value, run directory taken, resume conflict)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during training (``signum`` says which)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_values(values: Mapping[str, Any]) -> None:
    """Check the flag values present in ``values`` (TrainSpec / PPOConfig field names; ``None``
    skipped): integer ranges, finite floats, the network size limits of
    :mod:`jmsra_agents.safe_files`. :class:`TrainSpecError` naming the flag. Allocates nothing."""
    import math

    from .safe_files import MAX_HIDDEN_LAYERS, MAX_LAYER_UNITS

    def bad(name: str, rule: str, v: Any) -> TrainSpecError:
        shown = repr(v) if not isinstance(v, int) or abs(v) < 10**30 else f"{str(v)[:12]}... ({len(str(v))} digits)"
        return TrainSpecError(f"{_flag(name)} must be {rule}; got {shown}")

    for name, (lo, hi) in _INT_LIMITS.items():
        v = values.get(name)
        if v is None:
            continue
        if name == "n_envs" and values.get("backend") != "sb3":  # the torch backend, or not known yet (the
            hi = MAX_TORCH_N_ENVS  # spec's own check, where the backend is known, then holds SB3 to MAX_N_ENVS)
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad(name, f"an integer in [{lo:,}, {hi:,}]", v)
        if not lo <= v <= hi:
            if name == "total_timesteps" and v < 1:
                raise bad(name, "a positive integer", v)
            raise bad(name, f"an integer in [{lo:,}, {hi:,}]", v)
    for name in (*_POSITIVE_FLOATS, *_NON_NEGATIVE_FLOATS, *_UNIT_FLOATS, "log_std_init", "target_kl"):
        v = values.get(name)
        if v is None:
            continue
        if not _real(v) or not math.isfinite(float(v)):
            raise bad(name, "a finite number", v)
        if name in _POSITIVE_FLOATS and not v > 0:
            raise bad(name, "a finite number > 0", v)
        if name in _NON_NEGATIVE_FLOATS and not v >= 0:
            raise bad(name, "a finite number >= 0", v)
        if name in _UNIT_FLOATS and not 0 <= v <= 1:
            raise bad(name, "in [0, 1]", v)
        if name == "target_kl" and not v > 0:
            raise bad(name, "a finite number > 0 (or not given: no early stop)", v)
        if name == "log_std_init" and not abs(v) <= MAX_LOG_STD:
            raise bad(name, f"a finite number in [-{MAX_LOG_STD:g}, {MAX_LOG_STD:g}]", v)
    arch = values.get("net_arch")
    if arch is not None:
        if (not isinstance(arch, (tuple, list)) or not 1 <= len(arch) <= MAX_HIDDEN_LAYERS
                or not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_LAYER_UNITS for h in arch)):
            raise bad("net_arch", f"1 to {MAX_HIDDEN_LAYERS} layer sizes, each an integer in [1, {MAX_LAYER_UNITS}] "
                                  f"(the safe format's limits)", tuple(arch) if isinstance(arch, list) else arch)
    n_steps, n_envs = values.get("n_steps"), values.get("n_envs")
    if isinstance(n_steps, int) and isinstance(n_envs, int) and n_steps * n_envs > MAX_ROLLOUT_STEPS:
        raise TrainSpecError(f"--n-steps x --n-envs = {n_steps * n_envs:,} steps per rollout; at most "
                             f"{MAX_ROLLOUT_STEPS:,} (the rollout buffer is held in memory)")


def check_network_size(net_arch, n_inputs: int, n_outputs: int) -> None:
    """The policy (and the same-sized value) network within :data:`jmsra_agents.safe_files.MAX_POLICY_PARAMETERS`."""
    from .safe_files import MAX_POLICY_PARAMETERS, mlp_parameters

    n = mlp_parameters([n_inputs, *net_arch, n_outputs])
    if n > MAX_POLICY_PARAMETERS:
        raise TrainSpecError(f"--net-arch {','.join(map(str, net_arch))} makes a policy network of {n:,} parameters "
                             f"({n_inputs} inputs); at most {MAX_POLICY_PARAMETERS:,} (docs/training.md, flag limits)")


def default_ppo(bc_steps: int, *, session: bool = False, backend: str = "sb3", **changes: Any) -> PPOConfig:
    """The PPO defaults of a run: fine-tuning step size and noise after behaviour cloning; on a
    session scenario the discount :data:`SESSION_GAMMA` (a given ``gamma`` wins). ``backend="torch"``:
    :func:`jmsra_agents.torch_ppo.default_torch_ppo` (a :class:`~jmsra_agents.torch_ppo.TorchPPOConfig`)."""
    if backend == "torch":
        from .torch_ppo import default_torch_ppo

        base = default_torch_ppo(bc_steps)
        return (base.replace(gamma=SESSION_GAMMA) if session else base).replace(**changes)
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
    backend: str = "sb3"  # "sb3" (the reference) or "torch" (jmsra_agents.torch_ppo: env, rollouts, updates on one device)
    # "ppo" (one policy for the team), or decentralised agents on the torch backend (jmsra_agents.torch_marl):
    # "mappo" (centralised critic on the team's state) or "ippo" (each agent's critic on its own observation)
    algorithm: str = "ppo"

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
    out["algorithm"] = args.get("algorithm", "ppo")  # runs made before the multi-agent trainer: PPO
    bc = info.get("bc", {})
    out.setdefault("bc_steps", bc.get("steps", 0) if bc else 0)
    return out


def _ppo_class(backend: str) -> type:
    if backend == "torch":
        from .torch_ppo import TorchPPOConfig

        return TorchPPOConfig
    return PPOConfig


def _checked_saved_fields(point) -> dict[str, Any]:
    """:func:`_saved_fields` of a resume point; a malformed ``run.json`` is a TrainSpecError naming it."""
    from . import checkpoint as ck

    try:
        return _saved_fields(point.run_info)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise TrainSpecError(f"--resume: {point.run_dir / ck.RUN_FILE}: malformed run description "
                             f"({type(exc).__name__}: {exc})") from None


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
    saved = _checked_saved_fields(point)
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


def validate_spec(spec: TrainSpec, *, check_paths: bool = True) -> None:
    """Every check :func:`train` makes before it creates anything (``TrainSpecError`` naming the
    flag); ``check_paths=False`` skips the ``--logdir`` check (a sweep checks its trials' flags
    before their folders exist)."""
    _validate(spec, check_paths=check_paths)


def _validate(spec: TrainSpec, *, check_paths: bool = True) -> _Plan:
    from . import runs
    from .encoding import ACTION_ENCODINGS
    from .envs import VEC_KINDS, box_env_id, scenario_config
    from .features import FEATURE_SETS
    from .ppo import resolve_device

    _validate_backend(spec)
    if not isinstance(spec.total_timesteps, int) or isinstance(spec.total_timesteps, bool) or spec.total_timesteps <= 0:
        raise TrainSpecError(f"--total-timesteps must be a positive integer; got {spec.total_timesteps!r}")
    for name in ("n_envs", "threads"):
        v = getattr(spec, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise TrainSpecError(f"{_flag(name)} must be >= 1; got {v!r}")
    for name in ("bc_steps", "checkpoint_freq", "eval_freq", "eval_episodes", "compare_episodes"):
        v = getattr(spec, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise TrainSpecError(f"{_flag(name)} must be >= 0; got {v!r}")
    if spec.bc_steps > 0 and (spec.bc_rounds or 0) < 1:
        raise TrainSpecError(f"--bc-rounds must be >= 1; got {spec.bc_rounds}")
    try:
        ppo = spec.ppo_config()
    except (ValueError, TypeError) as exc:
        raise TrainSpecError(str(exc)) from exc
    check_values({**{f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)},
                  **{k: v for k, v in ppo.to_dict().items()}})
    for name in ("env_id", "logdir"):
        if not isinstance(getattr(spec, name), str):
            raise TrainSpecError(f"{_flag(name)} must be a string; got {type(getattr(spec, name)).__name__}")
    if spec.bc_expert is not None and not isinstance(spec.bc_expert, str):
        raise TrainSpecError(f"--bc-expert must be a string; got {type(spec.bc_expert).__name__}")
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
    from .features import n_features

    check_network_size(ppo.net_arch, n_features(cfg.n_agents, spec.features, bool(cfg.session.enabled)),
                       2 * cfg.n_agents)
    if spec.bc_expert is not None and spec.bc_steps > 0:
        from jmsra_env.policies import make_policy

        try:
            make_policy(spec.bc_expert, config=cfg)
        except ValueError as exc:
            raise TrainSpecError(f"--bc-expert: {exc}") from exc
    resume = _validate_resume(spec) if spec.resume is not None else None
    name = spec.run_name if spec.run_name is not None else runs.default_run_name(env_id, spec.seed, spec.algorithm)
    try:
        runs.check_run_name(name)
        if resume is None and check_paths:
            runs.check_logdir(spec.logdir)
    except runs.RunDirError as exc:
        raise TrainSpecError(str(exc)) from exc
    return _Plan(spec, env_id, cfg, ppo, device, resume, name)


def _validate_backend(spec: TrainSpec) -> None:
    """The backend and the settings that only one backend has (before anything is created)."""
    from .torch_marl import ALGORITHMS, TEAM_ALGORITHMS
    from .torch_ppo import BACKENDS, TORCH_ONLY_FIELDS, TorchPPOConfig

    if spec.backend not in BACKENDS:
        raise TrainSpecError(f"--backend must be one of {BACKENDS}; got {spec.backend!r}")
    if spec.algorithm not in ALGORITHMS:
        raise TrainSpecError(f"--algorithm must be one of {ALGORITHMS}; got {spec.algorithm!r}")
    if spec.algorithm in TEAM_ALGORITHMS:
        if spec.backend != "torch":
            raise TrainSpecError(f"--algorithm {spec.algorithm} runs on the torch backend only (--backend torch)")
        if spec.action_encoding != "deadline":
            raise TrainSpecError(f"--action-encoding {spec.action_encoding!r} cannot be split per agent; --algorithm "
                                 f"{spec.algorithm} uses 'deadline' (each agent's medium and finish-time target)")
        if getattr(spec.ppo, "dagger_rounds", 0):
            raise TrainSpecError("--dagger-rounds applies to --algorithm ppo only")
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
    saved = _checked_saved_fields(point)
    for key in RUN_DEFINING:
        value = getattr(spec, key) if key != "ppo" else spec.ppo_config()
        if _differs(key, value, saved):
            raise TrainSpecError(f"--resume: {_conflict(key, value, saved)} differs from the run; "
                                 f"build the spec with jmsra_agents.training.resume_spec")
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
        try:
            for p in runs.clean_run_dir(lock.run_dir):
                log(f"removed what an interrupted save left: {p}")
            if plan.resume is not None:
                unit = plan.resume.unit
                log(f"resuming from {unit.policy_path if spec.backend == 'torch' else unit.model_path} at "
                    f"{plan.resume.num_timesteps:,} steps"
                    + "".join(f"\n  passed over {r}" for r in plan.resume.passed_over))
            caught: dict[str, int | None] = {"signal": None}
            with _stop_on_signals(caught):
                if spec.backend == "torch" and spec.algorithm != "ppo":
                    from .torch_marl import TeamRun

                    result = TeamRun(plan, lock.run_dir, log, caught, torch_context()).run()
                elif spec.backend == "torch":
                    from .torch_ppo import TorchRun

                    result = TorchRun(plan, lock.run_dir, log, caught, torch_context()).run()
                else:
                    result = _Run(plan, lock.run_dir, log, caught).run()
        except BaseException:
            from . import checkpoint as ck

            # A start that failed before any model was saved leaves nothing behind (and puts back
            # the run --force replaced); a run with a saved model is kept (--resume continues it).
            if any(u.exists() for u in (ck.SavedUnit(lock.run_dir), ck.SavedUnit(lock.run_dir, ck.BEST_PREFIX))) \
                    or (lock.run_dir / ck.CHECKPOINT_DIR).is_dir():
                lock.commit()
            else:
                lock.abandon()
            raise
        lock.commit()
        return result


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
            "obs_pipeline": "jmsra_agents.features.observation_features -> VecNormalize.normalize_obs",
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
        callbacks.append(_stop_at_total(spec.total_timesteps))
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
        from . import runs

        kind = runs.finishing(self.caught, self.extra_info, interrupted, steps_done, learn_s, self.log)
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


def _stop_at_total(total_timesteps: int):
    """A callback that ends training at ``total_timesteps`` exactly.

    SB3 stops only after a whole rollout (``n_steps x n_envs``): a run resumed from a save made in
    the middle of a rollout (a signal) would overshoot its target (2,152 of 2,048). This stops at
    the first step that reaches the target inside a rollout; that partial rollout is not trained
    on. A rollout that ends at the target is trained as before (runs whose target is a multiple of
    the rollout are unchanged). The target is met exactly when the steps still to do are a
    multiple of ``n_envs``, otherwise at the first step past it.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class StopAtTotal(BaseCallback):
        def _on_step(self) -> bool:
            if self.model.num_timesteps < total_timesteps:
                return True
            buf = self.model.rollout_buffer
            return buf.pos >= buf.buffer_size - 1  # the step that fills the rollout: train on it

    return StopAtTotal()


def _comparison(model, vn, plan: _Plan, episodes: int) -> tuple[str, dict[str, float]]:
    """The held-out comparison table (seeds COMPARE_SEED+) and its figures (the evaluation core's
    statistics, the same as evaluate.py's)."""
    from .evaluation import live_model_policy

    spec = plan.spec
    policy = live_model_policy(model, vn, plan.cfg, spec.features, spec.action_encoding, label="ppo")
    return comparison_table(policy, plan, episodes)


def torch_context():
    """What a torch-backend run (:class:`jmsra_agents.torch_ppo.TorchRun`) takes from this module."""
    from .torch_ppo import RunContext

    return RunContext(TrainResult, TrainingInterrupted, comparison_table, RESUME_SEED_OFFSET, BC_SEED_OFFSET,
                      SESSION_BC_EXPERT, EVAL_SEED, COMPARE_EXPERTS, SESSION_COMPARE_EXPERTS)


def comparison_table(policy, plan: _Plan, episodes: int) -> tuple[str, dict[str, float]]:
    """The held-out comparison of an evaluation ``policy`` (both backends), under its label: ``ppo``,
    or a team run's ``mappo`` / ``ippo`` (``compare/<label>_latency_s``, ``..._gap_to_jmsra_pct``)."""
    from .evaluation import compare_with_experts, format_table

    spec = plan.spec
    experts = SESSION_COMPARE_EXPERTS if plan.cfg.session.enabled else COMPARE_EXPERTS
    res = compare_with_experts(plan.env_id, dict(spec.config_overrides), [policy], experts=experts,
                               episodes=episodes, seed=COMPARE_SEED, reference="jmsra")
    label = policy.label
    figures = {f"compare/{name}_latency_s": res.mean(name) for name in (label, *experts)}
    figures[f"compare/{label}_gap_to_jmsra_pct"] = float(res.row(label)["gap_pct"])
    return format_table(res, title=f"Held-out comparison ({plan.env_id}, {episodes} episodes):"), figures
