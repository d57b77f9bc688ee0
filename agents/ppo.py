"""The PPO factory: hyperparameters as a dataclass, device choice, model construction.

Defaults are tuned for the JMSRA environments (see ``docs/training.md`` for the search):
each round is a contextual bandit (the decision does not change the next round), so ``gamma = 0``
and the value function predicts the round's (normalised) reward; wide ReLU networks fit the
sharp bandwidth-allocation map better than SB3's default 64x64 tanh; a small initial action
standard deviation keeps exploration around the medium decision boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PPOConfig", "make_ppo", "resolve_device", "DEVICES"]

DEVICES = ("auto", "cpu", "cuda")

_ACTIVATIONS = ("tanh", "relu", "elu", "silu")


def _hp(default: Any, help: str, **cli: Any) -> Any:
    """A hyperparameter field: ``help`` (and optional argparse ``choices`` / ``parse``) feed the CLI flags."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata={"help": help, **cli})
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _int_tuple(text: str) -> tuple[int, ...]:
    """``"256,256"`` -> ``(256, 256)`` (the ``--net-arch`` syntax)."""
    try:
        return tuple(int(h) for h in str(text).split(",") if h.strip())
    except ValueError:
        raise ValueError(f"net_arch must be comma-separated integers such as 256,256; got {text!r}") from None


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (SB3 names); ``net_arch`` is shared by the policy and value nets.

    Each field is written once: ``jmsra_agents.cli_train`` derives a ``--flag`` from every field (its
    ``help`` metadata, type from the default or the ``parse`` metadata).
    """

    # defaults: the search in docs/training.md ("What mattered")
    learning_rate: float = _hp(3e-4, "step size (3e-5 after behaviour cloning unless given)")
    lr_schedule: str = _hp("linear", "linear decays to 0 at the end of training", choices=("constant", "linear"))
    n_steps: int = _hp(256, "steps per env and rollout")
    batch_size: int = _hp(512, "minibatch size")
    n_epochs: int = _hp(10, "passes over each rollout")
    gamma: float = _hp(0.0, "discount (rounds are independent decisions)")
    gae_lambda: float = _hp(0.95, "GAE lambda")
    clip_range: float = _hp(0.2, "PPO clip range")
    ent_coef: float = _hp(0.0, "entropy bonus")
    vf_coef: float = _hp(0.5, "value-loss weight")
    max_grad_norm: float = _hp(0.5, "gradient clipping")
    target_kl: float | None = _hp(None, "early-stop an update past this KL", parse=float)
    net_arch: tuple[int, ...] = _hp((256, 256), "hidden sizes, e.g. 256,256", parse=_int_tuple)
    activation: str = _hp("relu", "hidden activation", choices=_ACTIVATIONS)
    log_std_init: float = _hp(-1.0, "initial log std of the actions (-3 after behaviour cloning unless given)")
    ortho_init: bool = _hp(True, "orthogonal initialisation of the networks")

    def __post_init__(self) -> None:
        if isinstance(self.net_arch, list):
            object.__setattr__(self, "net_arch", tuple(self.net_arch))
        checks = [
            (self.learning_rate > 0, "learning_rate", "> 0"),
            (self.lr_schedule in ("constant", "linear"), "lr_schedule", "'constant' or 'linear'"),
            (isinstance(self.n_steps, int) and self.n_steps >= 1, "n_steps", "an integer >= 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (isinstance(self.n_epochs, int) and self.n_epochs >= 1, "n_epochs", "an integer >= 1"),
            (0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]"),
            (0.0 <= self.gae_lambda <= 1.0, "gae_lambda", "in [0, 1]"),
            (self.clip_range > 0, "clip_range", "> 0"),
            (self.ent_coef >= 0, "ent_coef", ">= 0"),
            (self.vf_coef >= 0, "vf_coef", ">= 0"),
            (self.max_grad_norm > 0, "max_grad_norm", "> 0"),
            (all(isinstance(h, int) and h >= 1 for h in self.net_arch), "net_arch", "positive integers"),
            (self.activation in _ACTIVATIONS, "activation", f"one of {_ACTIVATIONS}"),
        ]
        for ok, name, what in checks:
            if not ok:
                raise ValueError(f"PPO hyperparameter {name} must be {what}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["net_arch"] = list(self.net_arch)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PPO hyperparameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> PPOConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without CUDA is an error."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for but CUDA is not available (torch "
            f"{torch.__version__}, torch.cuda.is_available() is False); use --device cpu or auto"
        )
    return device


def _schedule(cfg: PPOConfig):
    lr = float(cfg.learning_rate)
    if cfg.lr_schedule == "constant":
        return lr
    return _LinearSchedule(lr)


class _LinearSchedule:
    """``lr * progress_remaining`` (picklable, unlike a lambda in a saved model)."""

    def __init__(self, initial: float):
        self.initial = initial

    def __call__(self, progress_remaining: float) -> float:
        return self.initial * progress_remaining


def policy_kwargs(cfg: PPOConfig) -> dict[str, Any]:
    import torch.nn as nn

    act = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}[cfg.activation]
    arch = list(cfg.net_arch)
    return {
        "net_arch": {"pi": arch, "vf": list(arch)},
        "activation_fn": act,
        "log_std_init": cfg.log_std_init,
        "ortho_init": cfg.ortho_init,
    }


def make_ppo(venv, cfg: PPOConfig | None = None, *, seed: int | None = 0, device: str = "auto",
             tensorboard_log: str | None = None, verbose: int = 0):
    """A Stable-Baselines3 PPO (``MlpPolicy`` on the feature vector) for a training ``VecEnv``."""
    from stable_baselines3 import PPO

    cfg = cfg or PPOConfig()
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=_schedule(cfg),
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        target_kl=cfg.target_kl,
        policy_kwargs=policy_kwargs(cfg),
        tensorboard_log=tensorboard_log,
        seed=seed,
        device=resolve_device(device),
        verbose=verbose,
    )
