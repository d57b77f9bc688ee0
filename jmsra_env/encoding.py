"""Action encodings: how the policy network's output becomes the environment's Box action.

The environment's SB3-ready form (``Box(-1, 1, (2N,))``: media signs, then log-scale weights on
the bandwidth above the agents' cap floors, :mod:`jmsra_env.actions`) reaches every split, but
good allocations span eight orders of magnitude (an NL agent may need 1e-8 of the band, a KV
agent most of it) and meet a sharp optimality condition (every agent with a payload finishes at
the same time). Two encodings, each a map from the policy's ``Box(-1, 1, (2N,))`` to the env's
form:

* ``"box"``: the identity (the env's own form).
* ``"deadline"`` (default): ``a[:N] > 0`` still means KV; ``a[N + i]`` is agent ``i``'s
  finish-time target ``F_i = 10 ** (0.5 + 1.5 a[N + i])`` s (0.1 s .. 100 s, log scale). The
  bandwidth that meets it is ``b_i = r_i^{-1}(D_i / (F_i - A_i))``
  (:func:`jmsra_env.model.inverse_rate_hz`, with ``A_i`` the agent's compute time and ``D_i`` its
  payload for the chosen medium, both from the observation), and the ``b_i`` are normalised to
  the band. Given the media this is a one-to-one reparameterisation of the shares (any split is
  some set of finish targets), so no decision is out of reach; what it buys is that the optimal
  split is "all targets equal", which a network learns easily. The env still charges the
  decoded Box action; :func:`decode_deadline` returns it in float64.
* ``"solved"``: ``a[:N] > 0`` means KV and the split is the (P2) optimum for those media on the
  observed round (:func:`jmsra_env.solvers.optimal_bandwidth`), each agent's bandwidth scaled by
  ``10 ** a[N + i]`` and renormalised: ``a[N:] = 0`` *is* the optimal split, so the policy's real
  task is the media selection (JMSRA's own decomposition: media by search, bandwidth by (P2)).
  About 1 ms per decision for the solve. Not a one-to-one map (deviations beyond 10x per agent
  are out of reach), so use ``"box"`` or ``"deadline"`` to study bandwidth allocation itself.

:class:`EncodedAction` applies an encoding to one Gymnasium env (``gym.make(box_id,
action_encoding="deadline")``, RL Zoo), :class:`VectorEncodedAction` to a gymnasium vector env,
``agents.encoding.EncodedActionVecEnv`` under an SB3 ``VecEnv``. All keep the last raw
observation: the encoding is decoded on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from . import actions, model
from .actions import encode_box
from .backend import namespace

__all__ = [
    "ACTION_ENCODINGS",
    "DEFAULT_ENCODING",
    "decode_deadline",
    "deadline_decision",
    "deadline_bandwidth_hz",
    "encode_deadline",
    "decode_solved",
    "encode_solved",
    "to_env_action",
    "expert_policy_action",
    "EncodedAction",
    "VectorEncodedAction",
]

ACTION_ENCODINGS = ("deadline", "box", "solved")
DEFAULT_ENCODING = "deadline"

_LOG10_CENTER = 0.5  # F = 10 ** (center + scale * a): a in [-1, 1] -> 0.1 s .. 100 s
_LOG10_SCALE = 1.5
_MIN_SLACK = 1e-3  # (F - A) >= 1e-3 F: a target before the compute finishes asks for a large, finite share


def check_encoding(encoding: str) -> None:
    if encoding not in ACTION_ENCODINGS:
        raise ValueError(f"action encoding must be one of {ACTION_ENCODINGS}; got {encoding!r}")


def deadline_bandwidth_hz(
    media, code, obs: Mapping[str, np.ndarray], consts: model.ModelConstants, terms: model.RoundTerms | None = None
) -> np.ndarray:
    """Per agent, the bandwidth (Hz, at most ``B``, not normalised) that meets the finish-time
    target coded by ``code`` in [-1, 1] with medium ``media``; each agent's from its own entries.
    ``terms``: the observation's terms when the caller has them (else rebuilt from ``obs``)."""
    xp = namespace(code)
    finish_s = xp.power(10.0, _LOG10_CENTER + _LOG10_SCALE * xp.clip(code, -1.0, 1.0))
    if terms is None:
        terms = model.terms_from_observation(consts, obs)
    compute_s = terms.prefill_s + model.select_medium(terms.extra_compute_s, media)
    payload = model.select_medium(terms.payload_bits, media)
    slack = xp.maximum(finish_s - compute_s, _MIN_SLACK * finish_s)
    b = model.inverse_rate_hz(payload / slack, terms.gain_hz)
    return xp.minimum(xp.where(xp.isfinite(b), b, consts.bandwidth_hz), consts.bandwidth_hz)


def decode_deadline(action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants) -> np.ndarray:
    """Env Box actions (float64, ``(..., 2N)``) for deadline-encoded actions on raw observations."""
    media, b = deadline_decision(action, obs, consts)
    return encode_box(media, b, model.terms_from_observation(consts, obs))


def deadline_decision(
    action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants, terms: model.RoundTerms | None = None
):
    """``(media, bandwidth_hz)`` of deadline-encoded actions on raw observations (NumPy or torch):
    what :func:`decode_deadline` encodes as the env's Box action (``terms``: the observation's
    terms when the caller has them)."""
    xp = namespace(action)
    a = xp.clip(xp.as_float(action), -1.0, 1.0)
    n = a.shape[-1] // 2
    media = xp.astype(a[..., :n] > 0.0, xp.int8)
    b = deadline_bandwidth_hz(media, a[..., n:], obs, consts, terms)
    return media, actions.shares_to_bandwidth_hz(b, consts.bandwidth_hz)


def encode_deadline(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """Deadline-encoded actions for decisions: every agent's target is the round's finish time.

    With an optimal split (all agents with a payload finish together) this decodes back to the
    same split, hence the same latency.
    """
    br = model.latency(terms, media, bandwidth_hz)
    finish = np.max(np.where(np.isfinite(br.finish_s), br.finish_s, 1e3), axis=-1)
    code = (np.log10(np.clip(finish, 1e-3, 1e3)) - _LOG10_CENTER) / _LOG10_SCALE
    n = np.shape(media)[-1]
    dead = np.broadcast_to(np.clip(code, -1.0, 1.0)[..., None], (*np.shape(code), n))
    return np.concatenate([2.0 * (np.asarray(media) != 0) - 1.0, dead], axis=-1)


def decode_solved(action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants) -> np.ndarray:
    """Env Box actions (float64) for ``"solved"``-encoded actions: the media of ``a[:N]``, the
    (P2)-optimal split for them on the observed round, agent ``i``'s bandwidth scaled by
    ``10 ** a[N + i]`` and the split renormalised to the band (``a[N:] = 0``: the optimum)."""
    from .solvers import optimal_bandwidth

    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    n = a.shape[-1] // 2
    media = (a[..., :n] > 0.0).astype(np.int8)
    terms = model.terms_from_observation(consts, obs)
    best, _ = optimal_bandwidth(terms, media)
    b = actions.shares_to_bandwidth_hz(best * np.power(10.0, a[..., n:]), consts.bandwidth_hz)
    return encode_box(media, b, terms)


def encode_solved(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """``"solved"``-encoded actions for decisions: ``log10`` of each agent's bandwidth over the
    (P2) optimum for the same media, centred and clipped to [-1, 1] (0 for an optimal split, which
    therefore round-trips exactly; agents without payload get 0)."""
    from .solvers import optimal_bandwidth

    media = (np.asarray(media) != 0).astype(np.int8)
    best, _ = optimal_bandwidth(terms, media)
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    pay = (best > 0.0) & (b > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pay, np.log10(b / np.where(pay, best, 1.0)), 0.0)
    count = np.maximum(pay.sum(axis=-1, keepdims=True), 1)
    ratio = np.where(pay, ratio - ratio.sum(axis=-1, keepdims=True) / count, 0.0)
    return np.concatenate([2.0 * media - 1.0, np.clip(ratio, -1.0, 1.0)], axis=-1)


def to_env_action(encoding: str, action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants) -> np.ndarray:
    """The env's Box action for a policy action under ``encoding``."""
    check_encoding(encoding)
    if encoding == "box":
        return np.clip(np.asarray(action), -1.0, 1.0)
    if encoding == "solved":
        return decode_solved(action, obs, consts)
    return decode_deadline(action, obs, consts)


def expert_policy_action(encoding: str, media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """An expert decision as a policy action under ``encoding`` (behaviour-cloning targets)."""
    check_encoding(encoding)
    if encoding == "box":
        return encode_box(media, bandwidth_hz, terms)
    if encoding == "solved":
        return encode_solved(media, bandwidth_hz, terms)
    return encode_deadline(media, bandwidth_hz, terms)


class _DecodesActions:
    """What :class:`EncodedAction` and :class:`VectorEncodedAction` share: decode the policy's
    action with the encoding on the last observation the env returned."""

    def _setup(self, env, encoding: str) -> None:
        check_encoding(encoding)
        base = env.unwrapped
        if getattr(base, "action_form", None) != "box":
            raise ValueError(f"{type(self).__name__} wraps a JMSRA env with action_form='box' (a -Box- ID)")
        self.encoding = encoding
        self.consts = model.model_constants(base.config)
        self._last_obs = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        env_action = to_env_action(self.encoding, action, self._last_obs, self.consts)
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        self._last_obs = obs
        return obs, reward, terminated, truncated, info


class EncodedAction(_DecodesActions, gym.Wrapper):
    """Decode the policy's actions with an encoding on a single JMSRA env with the Box action form
    (``gym.make(box_id, action_encoding=...)``; RL Zoo's ``env_wrapper``)."""

    def __init__(self, env: gym.Env, encoding: str = DEFAULT_ENCODING):
        gym.Wrapper.__init__(self, env)
        self._setup(env, encoding)


class VectorEncodedAction(_DecodesActions, gym.vector.VectorWrapper):
    """:class:`EncodedAction` on a gymnasium vector env of JMSRA environments (Box form), decoding
    each sub-environment's action on its last observation."""

    @property
    def autoreset_mode(self):
        """The wrapped env's autoreset mode (TorchRL's ``GymWrapper`` reads it)."""
        return self.env.autoreset_mode

    def __init__(self, env: gym.vector.VectorEnv, encoding: str = DEFAULT_ENCODING):
        gym.vector.VectorWrapper.__init__(self, env)
        self._setup(env, encoding)
