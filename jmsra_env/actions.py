"""Action forms, their validation and the exact encoding of expert decisions.

Two forms express a decision (a medium per agent and a bandwidth split):

* **Dict** ``{"media": MultiBinary(N), "bandwidth": Box(0, 1, (N,))}``: ``media[i]`` is 0 (NL) or
  1 (KV); ``bandwidth`` holds non-negative shares, normalised by their sum (all-zero = equal split).
* **Box** ``Box(-1, 1, (2N,), float32)`` (SB3-ready): ``a[:N] > 0`` means KV; the shares are
  ``(a[N:] + 1) / 2``, normalised by their sum (all ``-1`` = equal split).

Every function accepts a leading batch axis (a vectorised env's actions). Bad input is a
``ValueError`` naming the field.
:func:`encode_box` / :func:`encode_dict` turn any decision ``(media, bandwidth_hz)`` into a float64
action that decodes to the same bandwidth up to float64 rounding of each share relative to the
largest (~1e-16), so the latency is preserved to ~1e-10 or better. Cast to float32 (the Box space's
dtype, what SB3 policies emit) a share keeps only ~6e-8 of the largest share: a decision that gives
one agent a tiny sliver of the band can lose a few percent of latency there. Pass float64 actions
(``step`` accepts them) where exactness matters.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .model import max_over_agents, sum_over_agents

__all__ = [
    "decode_dict",
    "decode_box",
    "encode_dict",
    "encode_box",
    "shares_to_bandwidth_hz",
]


def _as_array(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"action field '{name}' must be numeric with shape {shape}; got {value!r}") from exc
    if arr.shape != shape:
        raise ValueError(f"action field '{name}' must have shape {shape}; got shape {arr.shape}")
    return arr


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
    with np.errstate(over="ignore"):  # an overflowing sum is rescaled below
        total = sum_over_agents(shares)[..., None]  # > 0 exactly when a share is (even subnormal)
    pos = total > 0.0
    total = np.where(pos, total, 1.0)
    if total.size and (total.max() > _RESCALE_ABOVE or total.min() < _RESCALE_BELOW):  # inf too
        shares = np.ldexp(shares, -np.frexp(np.where(pos, max_over_agents(shares)[..., None], 1.0))[1])
        total = np.where(pos, sum_over_agents(shares)[..., None], 1.0)
    b = (total_bandwidth_hz * shares) / total
    return np.where(pos, b, total_bandwidth_hz / shares.shape[-1])


def decode_dict(action, n_agents: int, total_bandwidth_hz: float, batch_shape: tuple[int, ...] = ()):
    """Validate a Dict action and return ``(media int8 (..., N), bandwidth_hz (..., N))``."""
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
    media = _as_array(action["media"], "media", shape)
    if not ((media == 0.0) | (media == 1.0)).all():
        _reject(media, "media", "hold 0 (NL) or 1 (KV)")
    shares = _as_array(action["bandwidth"], "bandwidth", shape)
    # Rejects negatives, NaN and inf (a sum of finite shares may overflow: that is fine).
    if not ((shares >= 0.0).all() and np.isfinite(shares).all()):
        _reject(shares, "bandwidth", "be non-negative")
    return media.astype(np.int8), shares_to_bandwidth_hz(shares, total_bandwidth_hz)


def decode_box(action, n_agents: int, total_bandwidth_hz: float, batch_shape: tuple[int, ...] = ()):
    """Validate a Box action ``(..., 2N)`` in [-1, 1] and return ``(media, bandwidth_hz)``."""
    shape = (*batch_shape, 2 * n_agents)
    a = _as_array(action, "action", shape)
    if not (np.abs(a) <= 1.0 + 1e-6).all():  # also rejects NaN
        _reject(a, "action", "lie in [-1, 1]")
    media = (a[..., :n_agents] > 0.0).astype(np.int8)
    shares = np.minimum(np.maximum(0.5 * (a[..., n_agents:] + 1.0), 0.0), 1.0)
    return media, shares_to_bandwidth_hz(shares, total_bandwidth_hz)


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


def encode_box(media, bandwidth_hz) -> np.ndarray:
    """A float64 Box action in [-1, 1] that decodes to ``(media, bandwidth_hz)``.

    Media map to -1 (NL) / +1 (KV); bandwidth to ``2 b / max(b) - 1``. A split that does not use
    the whole band decodes scaled up to the full band.
    """
    d = encode_dict(media, bandwidth_hz)
    return np.concatenate([2.0 * d["media"] - 1.0, 2.0 * d["bandwidth"] - 1.0], axis=-1)
