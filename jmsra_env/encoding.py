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
``jmsra_agents.encoding.EncodedActionVecEnv`` under an SB3 ``VecEnv``. All keep the last raw
observation: the encoding is decoded on it.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from . import actions, model
from .actions import encode_box
from .backend import namespace
from .bandwidth import optimal_bandwidth, optimal_split_hz

__all__ = [
    "ACTION_ENCODINGS",
    "DEFAULT_ENCODING",
    "decode_deadline",
    "deadline_decision",
    "deadline_bandwidth_hz",
    "encode_deadline",
    "express_deadline",
    "express_decision",
    "charged_split_hz",
    "decode_solved",
    "solved_decision",
    "encode_solved",
    "to_env_action",
    "policy_action",
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


def decode_deadline(
    action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants, terms: model.RoundTerms | None = None
) -> np.ndarray:
    """Env Box actions (float64, ``(..., 2N)``) for deadline-encoded actions on raw observations
    (``terms``: the observation's terms when the caller has them, else rebuilt from ``obs``)."""
    if terms is None:
        terms = model.terms_from_observation(consts, obs)
    media, b = deadline_decision(policy_action(action, obs), obs, consts, terms)
    return encode_box(media, b, terms)


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


def charged_split_hz(media, bandwidth_hz, terms: model.RoundTerms, spread: str = "optimal") -> np.ndarray:
    """A split ``(..., N)`` charged the same latency as the decision ``(media, bandwidth_hz)`` on
    ``terms`` whose agents without a payload get no bandwidth (as the ``"deadline"`` and
    ``"solved"`` decoders always grant) and whose agents with one share ``B``.

    The latency of a round depends on the split only through its largest finish time ``T``
    (:func:`jmsra_env.model.latency`; a capped round: any ``T`` at or above the cap's level is
    charged the cap). So each agent with a payload gets at least the bandwidth ``n_i`` with which
    it finishes by ``T``; one agent, ``p``, gets exactly ``n_p`` (the largest ``n_i`` relative to
    its (P2)-optimal share ``o_i``; on a capped round with ``spread="slack"`` the largest ``n_i``), and the others share
    the rest of the band, each at least its ``n_i``: ``spread="optimal"`` in proportion to the
    ``o_i`` (what ``"solved"`` expresses best), ``spread="slack"`` so that they all get the same
    transmission time (at most ``T`` minus their compute; what ``"deadline"`` expresses best).
    An agent without a payload finishing at ``T`` (its compute) needs no ``p``. A decision whose
    media admit no split finishing by the cap's level gets the (P2) split (capped like any other).
    When ``p`` is alone with a payload and an agent without one holds part of the band, no such
    split exists (those decoders give ``p`` the whole band): ``p`` gets it all.
    """
    if spread not in ("optimal", "slack"):
        raise ValueError(f"spread must be 'optimal' or 'slack'; got {spread!r}")
    kv = (np.asarray(media) != 0).astype(np.int8)
    b = actions.shares_to_bandwidth_hz(np.asarray(bandwidth_hz, dtype=np.float64), terms.bandwidth_hz)
    br = model.latency(terms, kv, b)
    payload = model.select_medium(terms.payload_bits, kv)
    compute = br.compute_s
    pay = payload > 0.0
    level = model.max_over_agents(br.finish_s)
    cap_level = terms.latency_cap_s - model.sum_over_agents(br.receiver_s) - terms.answer_s
    capped = br.capped[..., None]
    target = np.where(br.capped, np.minimum(level, cap_level), level)[..., None]
    need = _bandwidth_for_slack_hz(payload, target - compute, terms.gain_hz)
    best, _ = optimal_bandwidth(terms, kv)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(pay, need / np.where(best > 0.0, best, 1.0), -np.inf)
    key = np.where(capped & (spread == "slack"), np.where(pay, need, -np.inf), ratio)
    pinned = (np.arange(kv.shape[-1]) == np.argmax(key, axis=-1)[..., None]) & pay
    pinned &= ~np.any(~pay & (compute >= target), axis=-1, keepdims=True)  # an idle agent sets T
    free = pay & ~pinned
    rest = terms.bandwidth_hz - model.sum_over_agents(np.where(pinned, need, 0.0))[..., None]
    if spread == "optimal":
        free_best = model.sum_over_agents(np.where(free, best, 0.0))[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(free_best > 0.0, rest / np.where(free_best > 0.0, free_best, 1.0), 0.0)
        shared = scale * best
    else:
        shared = _equal_slack_split_hz(payload, np.where(free, target - compute, 0.0), rest, terms.gain_hz)
    split = np.where(pinned, need, np.where(free, shared, 0.0))
    alone = pinned & ~np.any(free, axis=-1, keepdims=True)  # p alone with a payload: the whole band
    split = np.where(alone, terms.bandwidth_hz, split)
    total_need = model.sum_over_agents(need)[..., None]
    feasible = np.isfinite(total_need) & (total_need <= terms.bandwidth_hz)
    return np.where(feasible, split, best)


def _bandwidth_for_slack_hz(payload_bits, slack_s, gain_hz) -> np.ndarray:
    """The bandwidth that sends ``payload_bits`` in ``slack_s`` (0 without payload, inf when the
    slack is not positive)."""
    pos = slack_s > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        b = model.inverse_rate_hz(payload_bits / np.where(pos, slack_s, 1.0), gain_hz)
    return np.where(payload_bits > 0.0, np.where(pos, b, np.inf), 0.0)


def _equal_slack_split_hz(payload_bits, max_slack_s, total_hz, gain_hz) -> np.ndarray:
    """Among the agents with ``max_slack_s > 0``: the bandwidths, summing to ``total_hz``, that
    give them one common transmission time ``s`` (or ``max_slack_s`` where that is shorter; by
    bisection on ``log s``). Assumes those agents can each send within ``max_slack_s`` on
    ``total_hz`` in all."""
    live = (max_slack_s > 0.0) & (payload_bits > 0.0)
    hi = np.max(np.where(live, max_slack_s, 0.0), axis=-1, keepdims=True)
    lo_log = np.log(np.where(hi > 0.0, hi, 1.0)) - 60.0
    hi_log = np.log(np.where(hi > 0.0, hi, 1.0))

    def used(log_s):
        slack = np.minimum(np.exp(log_s), np.where(live, max_slack_s, 1.0))
        return np.where(live, _bandwidth_for_slack_hz(payload_bits, slack, gain_hz), 0.0)

    for _ in range(100):
        mid = 0.5 * (lo_log + hi_log)
        over = model.sum_over_agents(used(mid))[..., None] > total_hz
        lo_log, hi_log = np.where(over, mid, lo_log), np.where(over, hi_log, mid)
    b = used(hi_log)
    total = model.sum_over_agents(b)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0.0, b * (total_hz / np.where(total > 0.0, total, 1.0)), 0.0)


def encode_deadline(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """Deadline-encoded actions for decisions: every agent's target is the round's finish time
    (the behaviour-cloning target: one number per round, easy to learn).

    With an optimal split (all agents with a payload finish together) this decodes back to the
    same split, hence the same latency, up to the decoder's resolution (an agent whose
    transmission takes less than ``MIN_SLACK`` of the round, e.g. a compute-bound NL agent, is
    granted slightly less: ~1e-3 of the latency at worst). :func:`express_deadline` is exact for
    every decision it can express.
    """
    br = model.latency(terms, media, bandwidth_hz)
    finish = np.max(np.where(np.isfinite(br.finish_s), br.finish_s, 1e3), axis=-1)
    code = (np.log10(np.clip(finish, 1e-3, 1e3)) - _LOG10_CENTER) / _LOG10_SCALE
    n = np.shape(media)[-1]
    dead = np.broadcast_to(np.clip(code, -1.0, 1.0)[..., None], (*np.shape(code), n))
    return np.concatenate([2.0 * (np.asarray(media) != 0) - 1.0, dead], axis=-1)


def express_deadline(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """Deadline-encoded actions charged exactly what the env charges for the decisions
    ``(media, bandwidth_hz)`` on ``terms`` (float64; what the expert policies return).

    The decoder grants each agent the bandwidth ``b_i`` that meets its target ``F_i`` and then
    normalises the ``b_i`` to the band, so only their ratios count: the targets encode the split
    divided by a common factor ``k >= 1``, the least that leaves every agent with a payload at
    least the decoder's shortest transmission time (``MIN_SLACK`` of a 0.1 s target; ``k = 1``
    almost always). Each target is then the agent's finish time on its share over ``k`` (or
    ``slack / MIN_SLACK`` where the decoder reads the slack off its floor). The decision's own
    split is encoded (it decodes back to itself, up to float64 rounding) unless an agent without
    a payload holds bandwidth or a target would exceed 100 s; such a round is encoded by
    :func:`charged_split_hz` (``spread="slack"``), a split charged the same latency on ``terms``.
    With an optimal split every agent with a payload targets the round's finish time.
    """
    kv = (np.asarray(media) != 0).astype(np.int8)
    own = actions.shares_to_bandwidth_hz(np.asarray(bandwidth_hz, dtype=np.float64), terms.bandwidth_hz)
    code, ok = _deadline_code(kv, own, terms)
    if not ok.all():
        other, _ = _deadline_code(kv, charged_split_hz(kv, own, terms, spread="slack"), terms)
        code = np.where(ok[..., None], code, other)
    return np.concatenate([2.0 * kv - 1.0, code], axis=-1)


def _deadline_code(kv, split, terms: model.RoundTerms) -> tuple[np.ndarray, np.ndarray]:
    """The deadline code ``(..., N)`` of a split and whether it decodes back to it (per row)."""
    payload = model.select_medium(terms.payload_bits, kv)
    compute = terms.prefill_s + model.select_medium(terms.extra_compute_s, kv)
    pay = payload > 0.0
    shortest_s = _MIN_SLACK * 10.0 ** (_LOG10_CENTER - _LOG10_SCALE) * (1.0 + 1e-9)
    # the k at which each agent's transmission time on split / k is the shortest one
    fastest = _bandwidth_for_slack_hz(payload, np.full_like(split, shortest_s), terms.gain_hz)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_each = np.where(pay & (fastest > 0.0) & (split > 0.0), split / np.where(fastest > 0.0, fastest, 1.0), 1.0)
    k = np.maximum(np.max(k_each, axis=-1, keepdims=True), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slack = model.transmission_time_s(payload, model.rate_bps(split / k, terms.gain_hz))
    live = pay & np.isfinite(slack)
    level = np.max(np.where(live, compute + slack, 0.0), axis=-1, keepdims=True)
    finish = np.where(live, compute + slack, np.maximum(level, 1.0))
    # The decoder transmits over max(F - A, MIN_SLACK F): a slack below MIN_SLACK F is the target
    # F = slack / MIN_SLACK (below the agent's compute time).
    small = live & (slack < _MIN_SLACK * finish)
    finish = np.where(small, slack / _MIN_SLACK, finish)
    code = (np.log10(np.clip(finish, 1e-3, 1e3)) - _LOG10_CENTER) / _LOG10_SCALE
    idle_hz = model.sum_over_agents(np.where(pay, 0.0, split))
    ok = (idle_hz <= 0.0) & np.all(~pay | (live & (np.abs(code) <= 1.0)), axis=-1)
    return np.clip(code, -1.0, 1.0), ok


def decode_solved(action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants) -> np.ndarray:
    """Env Box actions (float64) for ``"solved"``-encoded actions: the media of ``a[:N]``, the
    (P2)-optimal split for them on the observed round, agent ``i``'s bandwidth scaled by
    ``10 ** a[N + i]`` and the split renormalised to the band (``a[N:] = 0``: the optimum)."""
    terms = model.terms_from_observation(consts, obs)
    media, b = solved_decision(policy_action(action, obs), terms)
    return encode_box(media, b, terms)


def solved_decision(action, terms: model.RoundTerms):
    """``(media, bandwidth_hz)`` of ``"solved"``-encoded actions (valid, ``(..., 2N)`` in
    [-1, 1]; NumPy or torch) on the observed rounds ``terms``: what :func:`decode_solved` encodes
    as the env's Box action. On torch the (P2) split is solved on the tensors' device
    (:func:`jmsra_env.bandwidth.optimal_split_hz`)."""
    xp = namespace(action)
    n = action.shape[-1] // 2
    media = xp.astype(action[..., :n] > 0.0, xp.int8)
    best = optimal_split_hz(terms, media)
    return media, actions.shares_to_bandwidth_hz(best * xp.power(10.0, action[..., n:]), terms.bandwidth_hz)


def encode_solved(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """``"solved"``-encoded actions for decisions: ``log10`` of each agent's bandwidth over the
    (P2) optimum for the same media, shifted so that the smallest and largest are symmetric about
    0 (0 for an optimal split, which therefore round-trips exactly; agents without payload get 0).
    The decision's own split is encoded when those ratios span at most a factor 100 and no agent
    without a payload holds bandwidth; otherwise :func:`charged_split_hz` (a split charged the
    same latency on ``terms``), clipped to [-1, 1]."""
    kv = (np.asarray(media) != 0).astype(np.int8)
    best, _ = optimal_bandwidth(terms, kv)
    own = actions.shares_to_bandwidth_hz(np.asarray(bandwidth_hz, dtype=np.float64), terms.bandwidth_hz)
    code, ok = _solved_code(own, best)
    if not ok.all():
        other, _ = _solved_code(charged_split_hz(kv, own, terms), best)
        code = np.where(ok[..., None], code, other)
    return np.concatenate([2.0 * kv - 1.0, code], axis=-1)


def _solved_code(split, best) -> tuple[np.ndarray, np.ndarray]:
    """The solved code ``(..., N)`` of a split and whether it decodes back to it (per row)."""
    pay = best > 0.0
    live = pay & (split > 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(live, np.log10(split / np.where(live, best, 1.0)), 0.0)
    hi = np.max(np.where(live, ratio, -np.inf), axis=-1, keepdims=True)
    lo = np.min(np.where(live, ratio, np.inf), axis=-1, keepdims=True)
    mid = np.where(np.isfinite(hi) & np.isfinite(lo), 0.5 * (hi + lo), 0.0)
    ratio = np.where(live, ratio - mid, 0.0)
    ratio = np.where(np.abs(ratio) < 1e-12, 0.0, ratio)  # rounding noise of an optimal split: exactly 0
    idle_hz = model.sum_over_agents(np.where(pay, 0.0, split))
    ok = (idle_hz <= 0.0) & np.all(live == pay, axis=-1) & np.all(np.abs(ratio) <= 1.0, axis=-1)
    return np.clip(ratio, -1.0, 1.0), ok


def policy_action(action, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A policy's Box action ``(..., 2N)`` for the raw observation(s) ``obs``, validated
    (:func:`jmsra_env.actions.action_array`: finite real numbers of that shape, else a
    ``ValueError`` naming ``action``) and clipped to [-1, 1] (the encodings' domain)."""
    snr_shape = np.shape(obs["snr_db"])
    shape = (*snr_shape[:-1], 2 * snr_shape[-1])
    return np.clip(actions.action_array(action, "action", shape), -1.0, 1.0)


def to_env_action(
    encoding: str, action, obs: Mapping[str, np.ndarray], consts: model.ModelConstants,
    terms: model.RoundTerms | None = None,
) -> np.ndarray:
    """The env's Box action for a policy action under ``encoding`` (validated:
    :func:`policy_action`; ``terms``: the observation's terms when the caller has them)."""
    check_encoding(encoding)
    if encoding == "box":
        return policy_action(action, obs)
    if encoding == "solved":
        return decode_solved(action, obs, consts)
    return decode_deadline(action, obs, consts, terms)


def expert_policy_action(encoding: str, media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """An expert decision as a policy action under ``encoding`` (behaviour-cloning targets:
    :func:`encode_deadline`'s one target per round)."""
    check_encoding(encoding)
    if encoding == "box":
        return encode_box(media, bandwidth_hz, terms)
    if encoding == "solved":
        return encode_solved(media, bandwidth_hz, terms)
    return encode_deadline(media, bandwidth_hz, terms)


def express_decision(encoding: str, media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """A decision as an action under ``encoding`` charged exactly the decision's latency
    (:func:`express_deadline`, :func:`encode_solved`, :func:`jmsra_env.actions.encode_box`; what
    the expert policies return), wherever the encoding can express it."""
    check_encoding(encoding)
    if encoding == "box":
        return encode_box(media, bandwidth_hz, terms)
    if encoding == "solved":
        return encode_solved(media, bandwidth_hz, terms)
    return express_deadline(media, bandwidth_hz, terms)


class _DecodesActions:
    """What :class:`EncodedAction` and :class:`VectorEncodedAction` share: decode the policy's
    action with the encoding on the last observation the env returned.
    (``jmsra_view``: how :func:`jmsra_env.policies.make_policy` finds the layer.)"""

    jmsra_view = "action_encoding"

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
        # the env's own terms of the observed round (what terms_from_observation would rebuild)
        terms = self.env.unwrapped.observed_terms()
        env_action = to_env_action(self.encoding, action, self._last_obs, self.consts, terms)
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
