"""Action forms, their validation and the exact encoding of expert decisions.

Two forms express a decision (a medium per agent and a bandwidth split):

* **Dict** ``{"media": MultiBinary(N), "bandwidth": Box(0, 1, (N,))}``: ``media[i]`` is 0 (NL) or
  1 (KV); ``bandwidth`` holds non-negative shares, normalised by their sum (all-zero = equal split).
* **Box** ``Box(-1, 1, (2N,), float32)`` (SB3-ready, the ``-Box-v1`` IDs): ``a[:N] > 0`` means KV;
  ``a[N:]`` are log-scale weights on the bandwidth left once every agent has its *cap floor*:

      f_i = r_i^{-1}(D_i / (T_cap - sum_j R_j - G - A_i))    (0 without payload)
      b_i = f_i + (B - sum_j f_j) * w_i / sum_j w_j,   w_i = 10 ** (BOX_LOG10_RANGE * a[N + i])

  ``f_i`` is the least bandwidth with which agent ``i`` finishes before the round reaches the
  latency cap ``T_cap`` (``A_i`` its compute, ``D_i`` its payload, ``R_i`` the receiver's work for
  the chosen medium, ``G`` the answer), computed from the *observed* round (the terms a policy
  rebuilds from its observation with :func:`jmsra_env.model.terms_from_observation`). So every
  action in the box decodes to a split under which no agent misses the cap whenever the chosen
  media allow one; when they do not (``sum f_i >= B``: the round is capped whatever the split),
  ``b_i = B w_i / sum_j w_j``. Every agent with a payload always gets a positive share; there is
  no cliff. ``BOX_LOG10_RANGE = 5``: the weights span ten decades, enough for every expert (the
  smallest excess share an expert grants is ~1e-9.5 of the largest).

Every function accepts a leading batch axis (a vectorised env's actions). Bad input is a
``ValueError`` naming the field: :func:`action_array` is the one check of what a policy hands any
action form or wrapper (finite real numbers of the right shape).
:func:`encode_box` / :func:`encode_dict` turn any decision ``(media, bandwidth_hz)`` into a float64
action that decodes to the same bandwidth up to float64 rounding. The Box action survives a cast to
float32 (the space's dtype, what SB3 policies emit): rounding ``a`` moves each weight by at most
``ln(10) * 5 * 3e-8 ~ 3.5e-7`` relative, and the latency by less than 1e-6 relative (measured on
every expert: at most 4e-7). A decision that misses the cap although the same media allow a split
that does not is encoded as the split that puts those agents exactly at the cap: its latency,
``T_cap``, is the capped latency the decision is charged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import numpy as np

from . import model
from .backend import host_min_max, namespace
from .model import max_over_agents, sum_over_agents

__all__ = [
    "action_array",
    "decode_dict",
    "decode_box",
    "encode_dict",
    "encode_box",
    "shares_to_bandwidth_hz",
    "BOX_LOG10_RANGE",
    "cap_floor_hz",
    "box_decision",
]

BOX_LOG10_RANGE = 5.0  # c in w = 10^(c a): ten decades over [-1, 1] (experts need ~9.5, measured)


def action_array(value, name: str, shape: tuple[int, ...], *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 array of ``shape``: the one check every action form and wrapper
    applies to what a policy hands it. ``ValueError`` naming the field (``media``, ``bandwidth``,
    ``action``) unless it is an array-like of finite real numbers (bool, integer or float) of that
    shape: strings (even numeric ones), complex numbers, objects, ragged lists, Python ints beyond
    the float64 range (``10**400``), NaN and inf are refused (``finite=False``: NaN and inf are
    left to the caller, which names the entry)."""
    return _as_float64(_real_array(value, name, shape), name, finite)


def _real_array(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``np.asarray(value)`` once it is known to hold real numbers (bool, integer or float) of
    ``shape`` (the checks of :func:`action_array` before its cast)."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged lists, odd array-likes
        raise ValueError(
            f"action field '{name}' must be an array of real numbers with shape {shape}; got {_short(value)}"
        ) from exc
    if raw.dtype.kind not in "biuf":
        what = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "objects or integers beyond float64"}
        raise ValueError(
            f"action field '{name}' must hold finite real numbers; got {what.get(raw.dtype.kind, raw.dtype.name)}: "
            f"{_short(value)}"
        )
    if raw.shape != shape:
        raise ValueError(f"action field '{name}' must have shape {shape}; got shape {raw.shape}")
    return raw


def _as_float64(raw: np.ndarray, name: str, finite: bool) -> np.ndarray:
    """The float64 cast of :func:`action_array` and its finiteness check (``raw`` from
    :func:`_real_array`). Only a float wider than float64 (longdouble) can overflow the cast, and
    only floats can be NaN or inf: bools and integers skip both."""
    if raw.dtype.kind != "f":
        return raw.astype(np.float64)
    # a longdouble beyond float64 becomes inf (refused below); narrower floats cannot overflow
    with np.errstate(over="ignore") if raw.dtype.itemsize > 8 else contextlib.nullcontext():
        arr = raw.astype(np.float64)
    if finite and not np.isfinite(arr).all():
        raise ValueError(f"action field '{name}' must be finite; got {arr.tolist()}")
    return arr


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _reject(arr: np.ndarray, name: str, rule: str) -> None:
    if not np.isfinite(arr).all():
        raise ValueError(f"action field '{name}' must be finite; got {arr.tolist()}")
    raise ValueError(f"action field '{name}' must {rule}; got {arr.tolist()}")


# Shares summing outside [2^-900, 2^900] are rescaled first (B s and sum(s) stay finite and normal).
_RESCALE_ABOVE = 2.0**900
_RESCALE_BELOW = 2.0**-900


def shares_to_bandwidth_hz(shares: np.ndarray, total_bandwidth_hz: float) -> np.ndarray:
    """Normalise non-negative finite shares ``(..., N)`` to a split of ``total_bandwidth_hz``.

    All-zero shares are an equal split. Shares whose sum is huge or tiny (subnormal, near the
    float64 maximum) are first scaled by the power of two of their largest, which is exact: the
    result is ``B s / sum(s)`` bit for bit wherever that does not overflow or underflow. So the
    granted bandwidths are finite, non-negative and sum to ``total_bandwidth_hz`` up to rounding
    (~N ulp) for every input.
    """
    xp = namespace(shares)
    with xp.errstate(over="ignore"):  # an overflowing sum is rescaled below
        total = sum_over_agents(shares)[..., None]  # > 0 exactly when a share is (even subnormal)
    if not xp.is_torch and total.dtype == np.float64:  # NumPy, the common case: B s / sum(s) as it is
        n = total.size
        if n == 1:
            least = most = total.item()
        elif n:
            least, most = host_min_max(total)
        if n and _RESCALE_BELOW <= least and most <= _RESCALE_ABOVE:  # every sum > 0, none rescaled
            return (total_bandwidth_hz * shares) / total
    pos = total > 0.0
    total = xp.where(pos, total, 1.0)
    lo, hi = (_RESCALE_BELOW, _RESCALE_ABOVE) if total.dtype == xp.float64 else (2.0**-60, 2.0**60)
    if not xp.host:  # branch-free (a GPU, torch.compile): only the rows that need it (exact either way)
        far = (total > hi) | (total < lo)  # inf too
        scaled = xp.ldexp(shares, -xp.frexp(xp.where(pos, max_over_agents(shares)[..., None], 1.0))[1])
        shares = xp.where(far, scaled, shares)
        total = xp.where(far, xp.where(pos, sum_over_agents(shares)[..., None], 1.0), total)
    elif xp.numel(total) and (total.max() > hi or total.min() < lo):  # inf too
        shares = xp.ldexp(shares, -xp.frexp(xp.where(pos, max_over_agents(shares)[..., None], 1.0))[1])
        total = xp.where(pos, sum_over_agents(shares)[..., None], 1.0)
    b = (total_bandwidth_hz * shares) / total
    return xp.where(pos, b, total_bandwidth_hz / shares.shape[-1])


_DICT_KEYS = frozenset({"media", "bandwidth"})


def decode_dict(action, n_agents: int, total_bandwidth_hz: float, batch_shape: tuple[int, ...] = ()):
    """Validate a Dict action and return ``(media int8 (..., N), bandwidth_hz (..., N))``."""
    if not (type(action) is dict and action.keys() == _DICT_KEYS):  # a plain dict: one comparison
        if not isinstance(action, Mapping):
            raise ValueError(
                f"action must be a dict with keys 'media' and 'bandwidth'; got {type(action).__name__}"
            )
        extra = set(action) - {"media", "bandwidth"}
        missing = {"media", "bandwidth"} - set(action)
        if missing or extra:
            raise ValueError(
                f"action must have exactly the keys 'media' and 'bandwidth'; missing {sorted(missing)}, "
                f"unexpected {sorted(map(str, extra))}"
            )
    shape = (*batch_shape, n_agents)
    raw = _real_array(action["media"], "media", shape)
    if raw.dtype.kind in "iu":  # integers are 0 or 1 exactly when they lie in [0, 1]
        least, most = host_min_max(raw) if raw.size else (0, 0)
        if not (least >= 0 and most <= 1):
            _reject(raw.astype(np.float64), "media", "hold 0 (NL) or 1 (KV)")
        media = raw.astype(np.int8)
    elif raw.dtype.kind == "b":  # always 0 or 1
        media = raw.astype(np.int8)
    else:
        media = _as_float64(raw, "media", True)
        if not ((media == 0.0) | (media == 1.0)).all():
            _reject(media, "media", "hold 0 (NL) or 1 (KV)")
        media = media.astype(np.int8)
    shares = _as_float64(_real_array(action["bandwidth"], "bandwidth", shape), "bandwidth", False)
    # Rejects negatives, NaN (both comparisons fail) and inf, naming NaN and inf as such (_reject)
    # (a sum of finite shares may overflow: that is fine).
    least, most = host_min_max(shares) if shares.size else (0.0, 0.0)
    if not (least >= 0.0 and most < math.inf):
        _reject(shares, "bandwidth", "be non-negative")
    return media, shares_to_bandwidth_hz(shares, total_bandwidth_hz)


def decode_box(action, terms: model.RoundTerms, batch_shape: tuple[int, ...] | None = None):
    """Validate a Box action ``(..., 2N)`` in [-1, 1] and return ``(media, bandwidth_hz)``.

    ``terms`` are the observed round(s) the action answers (batch shape ``batch_shape``, by default
    ``terms.batch_shape``): the cap floors of the log-weight form (module docstring) come from them.
    """
    _check_terms(terms, "decode_box")
    n = terms.n_agents
    shape = (*(terms.batch_shape if batch_shape is None else batch_shape), 2 * n)
    a = action_array(action, "action", shape)
    if not (np.abs(a) <= 1.0 + 1e-6).all():  # also rejects NaN
        _reject(a, "action", "lie in [-1, 1]")
    return box_decision(a, terms)


def box_decision(a, terms: model.RoundTerms):
    """``(media, bandwidth_hz)`` of valid Box actions ``a`` (``(..., 2N)`` in [-1, 1], NumPy or
    torch): the decoding of :func:`decode_box` without its validation."""
    xp = namespace(a)
    n = terms.n_agents
    media = xp.astype(a[..., :n] > 0.0, xp.int8)
    weights = xp.power(10.0, BOX_LOG10_RANGE * (xp.minimum(a[..., n:], 1.0) - 1.0))  # (0, 1]
    floor, spare = _cap_floor_and_spare(terms, media)
    share = weights / sum_over_agents(weights)[..., None]
    ok = spare > 0.0
    fixed = xp.where(ok, floor, 0.0) + xp.where(ok, spare, 0.0) * share
    return media, xp.where(ok, fixed, terms.bandwidth_hz * share)


def cap_floor_hz(terms: model.RoundTerms, media) -> np.ndarray:
    """Per agent ``(..., N)`` the least bandwidth with which it finishes before the round reaches
    the latency cap, given everyone's ``media``: 0 without payload, inf when no bandwidth does."""
    compute = terms.prefill_s + model.select_medium(terms.extra_compute_s, media)
    payload = model.select_medium(terms.payload_bits, media)
    receiver = sum_over_agents(model.select_medium(terms.receiver_s, media))
    xp = namespace(payload)
    slack = (terms.latency_cap_s - receiver - terms.answer_s)[..., None] - compute
    late = slack <= 0.0
    floor = model.inverse_rate_hz(payload / xp.where(late, 1.0, slack), terms.gain_hz)
    return xp.where(payload > 0.0, xp.where(late, math.inf, floor), 0.0)


def _check_terms(terms, fn: str) -> None:
    if not isinstance(terms, model.RoundTerms):
        raise ValueError(
            f"{fn} needs the observed round's model.RoundTerms (the Box form decodes on the cap floors "
            f"since the -Box-v1 IDs; env.unwrapped.observed_terms() or model.terms_from_observation); "
            f"got {type(terms).__name__}"
        )


# The cap floors of the last round asked for: encoding a decision as a Box action and decoding
# that action again (an encoding wrapper, then the env) ask for the same round's floors with the
# same media; the second call reuses them (NumPy only; the terms object and the media must match).
_FLOOR_MEMO: list = [None]


def _cap_floor_and_spare(terms: model.RoundTerms, media):
    """Cap floors and the bandwidth left above them, ``(..., N)`` and ``(..., 1)``; the spare is
    ``-inf`` (or <= 0) when the media admit no uncapped split."""
    memo = _FLOOR_MEMO[0]
    host = isinstance(media, np.ndarray)
    if host and memo is not None and memo[0] is terms and memo[1].shape == media.shape and np.array_equal(memo[1], media):
        return memo[2], memo[3]
    floor = cap_floor_hz(terms, media)
    spare = terms.bandwidth_hz - sum_over_agents(floor)[..., None]
    if host:
        _FLOOR_MEMO[0] = (terms, media.copy(), floor, spare)
    return floor, spare


def _check_decision(media, bandwidth_hz):
    media = np.asarray(media)
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    if media.shape != b.shape:
        raise ValueError(f"media {media.shape} and bandwidth_hz {b.shape} must have the same shape")
    if not np.all(np.isfinite(b)) or np.any(b < 0.0):
        raise ValueError(f"bandwidth_hz must be finite and non-negative; got {b.tolist()}")
    return media, b


def encode_dict(media, bandwidth_hz) -> dict[str, np.ndarray]:
    """A Dict action that decodes to ``(media, bandwidth_hz)`` (exactly when ``sum b = B``)."""
    media, b = _check_decision(media, bandwidth_hz)
    peak = b.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(peak > 0.0, b / peak, 0.0)
    return {"media": (media != 0).astype(np.int8), "bandwidth": shares}


def encode_box(media, bandwidth_hz, terms: model.RoundTerms) -> np.ndarray:
    """A float64 Box action in [-1, 1] that decodes to ``(media, bandwidth_hz)`` on ``terms``.

    Media map to -1 (NL) / +1 (KV). The split, scaled to the whole band, is written as the log
    weights of its excess over the cap floors, the largest at +1 (a weight below 1e-10 of the
    largest is clipped to -1: it decodes to at most 1e-10 of the spare). An agent below its floor
    (the decision misses the cap) is put at the floor; when the media admit no uncapped split the
    weights are those of the shares themselves.
    """
    _check_terms(terms, "encode_box")
    xp = namespace(media, bandwidth_hz)
    if not xp.is_torch:  # torch: the decoders' own decisions, already valid
        media, b = _check_decision(media, bandwidth_hz)
    else:
        b = bandwidth_hz
    kv = xp.astype(media != 0, xp.int8)
    b = shares_to_bandwidth_hz(b, terms.bandwidth_hz)
    floor, spare = _cap_floor_and_spare(terms, kv)
    ok = spare > 0.0
    excess = xp.where(ok, xp.maximum(b - xp.where(ok, floor, 0.0), 0.0), b)
    peak = xp.amax(excess, axis=-1, keepdims=True)
    with xp.errstate(divide="ignore", invalid="ignore"):
        code = 1.0 + xp.log10(excess / peak) / BOX_LOG10_RANGE
    code = xp.where(peak > 0.0, xp.clip(xp.nan_to_num(code, nan=-1.0, neginf=-1.0), -1.0, 1.0), 1.0)
    return xp.concatenate([2.0 * kv - 1.0, code], axis=-1)
