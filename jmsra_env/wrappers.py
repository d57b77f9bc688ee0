"""Wrappers and the registered entry points.

:class:`BoxActionWrapper` gives the SB3-ready Box action form over a Dict-action environment.
:func:`make_env` / :func:`make_vector_env` (and :func:`make_session_env` /
:func:`make_session_vector_env` for the session IDs) are what ``gym.make`` / ``gym.make_vec`` call
for every registered ID: the environment, optionally wrapped by ``features=`` (:mod:`jmsra_env.features`:
a flat float32 ``Box`` observation) and ``action_encoding=`` (:mod:`jmsra_env.encoding`, Box IDs
only), so any library that builds environments from an ID and keyword arguments gets them::

    gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
"""

from __future__ import annotations

import gymnasium as gym

from . import actions
from .core.torch_env import TorchVectorEnv
from .encoding import EncodedAction, VectorEncodedAction
from .env import JMSRAEnv, make_action_space
from .features import FeatureObservation, VectorFeatureObservation
from .session_env import JMSRASessionEnv, JMSRASessionVectorEnv
from .session_env import make_session_vector_env as _session_vector_entry
from .vector import JMSRAVectorEnv

__all__ = [
    "BoxActionWrapper",
    "make_env",
    "make_vector_env",
    "make_session_env",
    "make_session_vector_env",
    "OPTION_CHOICES",
]

# Env-level options of make_env / make_vector_env and their values (None: the raw form).
OPTION_CHOICES = {"features": (None, "log", "physics"), "action_encoding": (None, "box", "deadline", "solved")}


class BoxActionWrapper(gym.ActionWrapper):
    """Expose a Dict-action :class:`~jmsra_env.JMSRAEnv` with the ``Box(-1, 1, (2N,))`` action form.

    ``a[:N] > 0`` selects KV; ``a[N:]`` are log-scale weights above the cap floors
    (:mod:`jmsra_env.actions`), decoded on the round the last observation shows. Use
    :func:`jmsra_env.encode_box` to turn an expert's decision into such an action.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        if getattr(base, "action_form", None) != "dict":
            raise ValueError("BoxActionWrapper wraps a JMSRAEnv with action_form='dict'")
        self.action_space = make_action_space(base.config, "box")

    def action(self, action):
        media, bandwidth_hz = actions.decode_box(action, self.env.unwrapped.observed_terms())
        return actions.encode_dict(media, bandwidth_hz)


def _check_options(features, action_encoding, action_form) -> None:
    for name, value in (("features", features), ("action_encoding", action_encoding)):
        if value not in OPTION_CHOICES[name]:
            raise ValueError(f"{name} must be one of {OPTION_CHOICES[name]}; got {value!r}")
    if action_encoding not in (None, "box") and action_form != "box":
        raise ValueError(
            f"action_encoding={action_encoding!r} applies to the Box action form (a -Box- ID); "
            f"got action_form={action_form!r}"
        )


# Arguments only the torch vector env takes (gym.make_vec(..., backend="torch")).
_TORCH_ONLY = ("device", "dtype", "compile")


def _check_numpy_arguments(kwargs, where: str) -> None:
    given = [k for k in _TORCH_ONLY if k in kwargs]
    if given:
        raise ValueError(
            f"{', '.join(f'{k}=' for k in given)} applies to the torch backend only: use gym.make_vec(id, num_envs=M, "
            f"vectorization_mode='vector_entry_point', backend='torch', ...) ({where} runs on NumPy)"
        )


def _make(env_class, args, features, action_encoding, kwargs) -> gym.Env:
    _check_numpy_arguments(kwargs, "gym.make")
    _check_options(features, action_encoding, kwargs.get("action_form", "dict"))
    env: gym.Env = env_class(*args, **kwargs)
    if action_encoding not in (None, "box"):
        env = EncodedAction(env, action_encoding)
    if features is not None:
        env = FeatureObservation(env, features)
    return env


def _make_vector(env_class, num_envs, args, features, action_encoding, kwargs) -> gym.vector.VectorEnv:
    _check_numpy_arguments(kwargs, "backend='numpy'")
    _check_options(features, action_encoding, kwargs.get("action_form", "dict"))
    env: gym.vector.VectorEnv = env_class(num_envs, *args, **kwargs)
    if action_encoding not in (None, "box"):
        env = VectorEncodedAction(env, action_encoding)
    if features is not None:
        env = VectorFeatureObservation(env, features)
    return env


def make_env(*args, features: str | None = None, action_encoding: str | None = None, **kwargs) -> gym.Env:
    """``JMSRAEnv(*args, **kwargs)``, wrapped by ``EncodedAction`` then ``FeatureObservation`` when
    ``action_encoding`` / ``features`` are given (``None``: the raw environment itself)."""
    return _make(JMSRAEnv, args, features, action_encoding, kwargs)


def make_session_env(*args, features: str | None = None, action_encoding: str | None = None, **kwargs) -> gym.Env:
    """:func:`make_env` for a session (``JMSRASessionEnv``; the session IDs' entry point)."""
    return _make(JMSRASessionEnv, args, features, action_encoding, kwargs)


def make_vector_env(
    num_envs: int = 1, *args, features: str | None = None, action_encoding: str | None = None,
    backend: str = "numpy", **kwargs
) -> gym.vector.VectorEnv:
    """:func:`make_env` for ``JMSRAVectorEnv``: the batched env, wrapped by ``VectorEncodedAction``
    and ``VectorFeatureObservation`` when asked. ``backend="torch"`` (with ``device=`` and
    ``dtype=``) gives the torch vector env (:class:`jmsra_env.core.torch_env.TorchVectorEnv`),
    which applies the options on the device itself."""
    if backend == "torch":
        kwargs.setdefault("action_form", "dict")
        return TorchVectorEnv(num_envs, *args, features=features, action_encoding=action_encoding, **kwargs)
    _check_backend(backend)
    return _make_vector(JMSRAVectorEnv, num_envs, args, features, action_encoding, kwargs)


def make_session_vector_env(
    num_envs: int = 1, *args, features: str | None = None, action_encoding: str | None = None,
    backend: str = "numpy", **kwargs
) -> gym.vector.VectorEnv:
    """:func:`make_vector_env` for sessions (``JMSRASessionVectorEnv``, or the torch vector env
    with ``backend="torch"``; the session IDs' vector entry point)."""
    if backend == "torch":
        return _session_vector_entry(
            num_envs, *args, backend="torch", features=features, action_encoding=action_encoding, **kwargs
        )
    _check_backend(backend)
    return _make_vector(JMSRASessionVectorEnv, num_envs, args, features, action_encoding, kwargs)


def _check_backend(backend) -> None:
    if backend != "numpy":
        raise ValueError(f"backend must be 'numpy' or 'torch'; got {backend!r}")
