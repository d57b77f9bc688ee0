"""The analytical latency model (docs/model.md): every formula, once, as pure array functions.

All functions broadcast over arrays, so the same code serves one round (arrays of shape
``(N,)``) and a batch of rounds (``(M, N)``), and they are written against the array namespace of
their inputs (:mod:`jmsra_env.backend`): NumPy arrays give NumPy results (float64, the reference),
torch tensors give tensors on the same device and dtype. Units: s, bit, Hz, FLOP/s, byte/s, dB.

Media are encoded as integers: ``NL = 0`` (natural-language tokens), ``KV = 1`` (KV cache).
Arrays with a trailing axis of length 2 hold a term for both media, indexed by that code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .backend import host_min_max, namespace
from .config import DEVICE_CATALOG, ScenarioConfig

__all__ = [
    "NL",
    "KV",
    "effective_compute_flops",
    "effective_mem_bw_bytes_per_s",
    "decode_time_per_token_s",
    "prefill_time_s",
    "nl_bits_per_token",
    "kv_bits_per_token",
    "nl_tokens",
    "pathloss_db",
    "full_band_snr_db",
    "gain_hz_from_snr_db",
    "snr_db_from_gain_hz",
    "rate_bps",
    "rate_ceiling_bps",
    "inverse_rate_hz",
    "inverse_rate_lambertw_hz",
    "spectral_efficiency_nats",
    "spectral_efficiency_step",
    "bandwidth_from_spectral_efficiency_hz",
    "inverse_rate_elasticity",
    "inverse_rate_newton_hz",
    "required_snr",
    "ModelConstants",
    "model_constants",
    "RoundTerms",
    "round_terms",
    "concat_terms",
    "TERM_ARRAY_FIELDS",
    "LatencyBreakdown",
    "latency",
    "select_medium",
    "sum_over_agents",
    "max_over_agents",
    "transmission_time_s",
    "terms_from_observation",
    "unit_terms",
    "scale_terms",
]

NL = 0
KV = 1

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Compute


def effective_compute_flops(peak_flops, load, efficiency):
    """F' = eta_c F (1 - u): achievable FLOP/s under background load ``u``."""
    return efficiency * peak_flops * (1.0 - load)


def effective_mem_bw_bytes_per_s(peak_bytes_per_s, load, efficiency):
    """W' = eta_m W (1 - u): achievable memory bandwidth (byte/s) under load ``u``."""
    return efficiency * peak_bytes_per_s * (1.0 - load)


def decode_time_per_token_s(params, weight_bits, flops, mem_bw_bytes_per_s):
    """tau_dec = max(2P / F', P w_bits / 8 / W'): one decoded token, compute- or memory-bound."""
    xp = namespace(flops, mem_bw_bytes_per_s)
    return xp.maximum(2.0 * params / flops, params * (weight_bits / 8.0) / mem_bw_bytes_per_s)


def prefill_time_s(params, n_tokens, flops):
    """tau_pre(n) = 2 P n / F': prefill of ``n`` tokens (compute-bound)."""
    return 2.0 * params * n_tokens / flops


# ---------------------------------------------------------------------------------------------
# Payloads


def nl_bits_per_token(vocab_size: int) -> int:
    """beta = ceil(log2 V): bits to send one token id."""
    return int(math.ceil(math.log2(vocab_size)))


def kv_bits_per_token(n_layers: int, n_kv_heads: int, head_dim: int, kv_bits: int) -> int:
    """kappa = 2 n_L n_kv d_h q_bits: keys and values of every layer for one token."""
    return 2 * n_layers * n_kv_heads * head_dim * kv_bits


def nl_tokens(context_tokens, nl_ratio):
    """K = ceil(rho L): length of the natural-language summary of a context of ``L`` tokens."""
    xp = namespace(nl_ratio, context_tokens)
    return xp.ceil(xp.multiply(nl_ratio, context_tokens))


# ---------------------------------------------------------------------------------------------
# Channel


def pathloss_db(distance_m, const_db=128.1, slope_db=37.6):
    """3GPP macro path loss ``const + slope log10(d / 1 km)`` in dB."""
    xp = namespace(distance_m)
    return const_db + slope_db * xp.log10(xp.asarray(distance_m) / 1000.0)


def full_band_snr_db(
    distance_m, shadowing_db, fading_power, tx_power_dbm, noise_dbm_per_hz, bandwidth_hz,
    const_db=128.1, slope_db=37.6,
):
    """SNR (dB) of an agent alone on the full band: p g / (N0 B) with g = 10^(-(PL + X)/10) |h|^2."""
    xp = namespace(distance_m, shadowing_db, fading_power)
    return (
        tx_power_dbm
        - pathloss_db(distance_m, const_db, slope_db)
        - shadowing_db
        + 10.0 * xp.log10(fading_power)
        - noise_dbm_per_hz
        - 10.0 * math.log10(bandwidth_hz)
    )


def gain_hz_from_snr_db(snr_db, bandwidth_hz):
    """a = p g / N0 (Hz), from the full-band SNR: a = B 10^(SNR/10)."""
    xp = namespace(snr_db)
    return bandwidth_hz * xp.power(10.0, xp.multiply(snr_db, 0.1))


def snr_db_from_gain_hz(gain_hz, bandwidth_hz):
    """Inverse of :func:`gain_hz_from_snr_db`."""
    xp = namespace(gain_hz, bandwidth_hz)
    return 10.0 * xp.log10(xp.divide(gain_hz, bandwidth_hz))


def rate_bps(bandwidth_hz, gain_hz):
    """Shannon rate r(b) = b log2(1 + a / b) in bit/s; 0 at b = 0 (increasing, concave in b).

    Safe for every float64 input (``a >= 0``): where ``a / b`` overflows (a subnormal ``b``, a
    huge ``a``), ln(1 + a/b) is taken as ln a - ln b (equal to float64 precision there), so the
    rate tends to 0 with ``b`` instead of jumping to inf; where ``a / b`` is below 1e-14 the rate is
    capped at the ceiling :func:`rate_ceiling_bps` (rounding could overshoot it by an ulp), and is
    the ceiling where ``a / b`` underflows (``b > 2^1022 a``; ``b = inf`` included). Non-decreasing
    in ``b`` up to float64 rounding (a few ulp). The common case costs two reductions more than the
    plain formula.
    """
    xp = namespace(bandwidth_hz, gain_hz)
    b = xp.as_float(bandwidth_hz)
    if not xp.is_torch and b.ndim and b.size and host_min_max(b)[0] > 0.0:
        # NumPy, every b > 0: the operations below with b_safe = b, and no final where
        with xp.errstate(over="ignore", invalid="ignore", divide="ignore"):
            x = gain_hz / b
            r = b * (xp.log1p(x) / LN2)
            # once every x >= 1e-14, r is >= 0, inf or NaN: max(r) < inf is isfinite(r).all()
            if not (host_min_max(x)[0] >= _SAFE_RATIO and host_min_max(r)[1] < math.inf):
                r = _rate_extremes_bps(xp, b, xp.as_float(gain_hz), x, r)
        return r
    pos = b > 0.0
    b_safe = xp.where(pos, b, 1.0)
    with xp.errstate(over="ignore", invalid="ignore", divide="ignore"):
        x = gain_hz / b_safe
        # log1p keeps full precision when b >> a (log2(1 + x) loses it for small x)
        r = b_safe * (xp.log1p(x) / LN2)
        # on a GPU always the safe path (no host sync; it equals the plain formula where that is fine)
        if not xp.host or (xp.numel(x) and not (x.min() >= _SAFE_RATIO and xp.isfinite(r).all())):
            r = _rate_extremes_bps(xp, b_safe, xp.as_float(gain_hz), x, r)
    return xp.where(pos, r, 0.0)


def _rate_extremes_bps(xp, b, a, x, r):
    """:func:`rate_bps` where ``a / b`` overflowed, underflowed or is tiny, or ``r`` overflowed."""
    over = xp.isinf(x)
    tiny = _FLOAT64_TINY if not xp.is_torch else xp.torch.finfo(x.dtype).tiny
    with xp.errstate(divide="ignore", invalid="ignore"):
        r = xp.where(over, b * ((xp.log(a) - xp.log(b)) / LN2), r)
    ceiling = rate_ceiling_bps(a)
    r = xp.fmin(r, ceiling)  # fmin: inf * 0 (b = inf) is NaN, whose limit is the ceiling
    # a / b subnormal: x has lost its precision, but r = a/ln2 (1 - x/2 ...) is the ceiling
    return xp.where(x < tiny, ceiling, r)


_FLOAT64_MAX = float(np.finfo(np.float64).max)
_FLOAT64_TINY = float(np.finfo(np.float64).tiny)  # the smallest normal float64
_SAFE_RATIO = 1e-14  # a / b above this: b log1p(a/b) / ln 2 cannot round above the ceiling


def rate_ceiling_bps(gain_hz):
    """sup_b r(b) = a / ln 2: the power-limited ceiling, approached as b grows (saturates at the
    largest float64 for a > ~1.2e308 instead of overflowing)."""
    xp = namespace(gain_hz)
    top = _FLOAT64_MAX if not xp.is_torch else xp.torch.finfo(xp.float).max
    with xp.errstate(over="ignore"):
        return xp.minimum(xp.as_float(gain_hz) / LN2, top)


def inverse_rate_hz(rate_bps_, gain_hz):
    """Bandwidth b >= 0 with r(b) = ``rate_bps_``: 0 for rate 0, inf at or above the ceiling.

    Pure-NumPy Newton on the spectral efficiency (:func:`inverse_rate_newton_hz`): exact to float64
    over the whole range, the rate ceiling included, and fast on large arrays.
    """
    return inverse_rate_newton_hz(rate_bps_, gain_hz)


def inverse_rate_lambertw_hz(rate_bps_, gain_hz):
    """:func:`inverse_rate_hz` in closed form, kept as an independent reference for tests.

    Through the Lambert W function (branch -1): with c = r ln2 / a in (0, 1),
    1 + a/b = -W_{-1}(-c e^{-c}) / c, polished by two Newton steps. It loses accuracy within a
    few percent of the rate ceiling; use :func:`inverse_rate_hz`.
    """
    from scipy.special import lambertw

    r = np.asarray(rate_bps_, dtype=np.float64)
    a = np.broadcast_to(np.asarray(gain_hz, dtype=np.float64), r.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = r * LN2 / a
        ok = (r > 0.0) & (c < 1.0) & (a > 0.0)
        cc = np.where(ok, c, 0.5)
        w = lambertw(-cc * np.exp(-cc), k=-1).real
        z = -w / cc  # = 1 + a / b
        b = a / (z - 1.0)
        # Newton polish: f(b) = b log2(1 + a/b) - r, f'(b) = log2(1 + a/b) - a / ((a + b) ln 2)
        for _ in range(2):
            f = b * np.log2(1.0 + a / b) - r
            fp = np.log2(1.0 + a / b) - a / ((a + b) * LN2)
            b_new = b - f / fp
            b = np.where(np.isfinite(b_new) & (b_new > 0.0), b_new, b)
        # At the ceiling (c -> 1) the bandwidth needed is unbounded: NaN / inf / 0 there mean inf.
        b = np.where(np.isfinite(b) & (b > 0.0), b, np.inf)
        out = np.where(ok, b, np.inf)
        out = np.where(r <= 0.0, 0.0, out)
    return out


# ---------------------------------------------------------------------------------------------
# Inverse rate by pure-NumPy Newton (the inner loop of jmsra_env.bandwidth, the (P2) solver)
#
# With u = ln(1 + a/b) (spectral efficiency in nat/s/Hz) the rate is r = b u / ln 2 and
# b = a / (e^u - 1), so r ln2 / a = u / (e^u - 1). Writing the rate as a fraction e^{-L} of the
# ceiling a / ln 2 (L > 0), u solves F(u) = ln((e^u - 1) / u) = L. F is increasing and convex with
# F' in (1/2, 1), so Newton from u0 = L + ln(1 + L) reaches full float64 precision in 4 steps for
# every L in [1e-15, 3e3] (checked against mpmath). About 100x faster than scipy's lambertw on
# large arrays; :func:`inverse_rate_lambertw_hz` (closed form) stays as an independent reference.

_NEWTON_STEPS = 4
_SERIES_BELOW = 0.05  # F and F' by their Taylor series below this u (no cancellation)


def spectral_efficiency_step(u, log_ceiling_ratio):
    """One Newton step on F(u) = ln((e^u - 1) / u) = L: returns ``(u_new, u - u_new)``.

    ``u`` > 0 and ``L`` of the same shape. Below u = 0.05, F and F' come from their Taylor series
    (evaluated only on those elements).
    """
    xp = namespace(u)
    em = -xp.expm1(-u)
    du = (u + xp.log(em) - xp.log(u) - log_ceiling_ratio) / xp.maximum(1.0 / em - 1.0 / u, 0.5)
    small = u < _SERIES_BELOW
    if not xp.host:  # a GPU, no host sync: the series on every element, selected
        u2 = u * u
        f = 0.5 * u + u2 * (1.0 / 24.0 - u2 * (1.0 / 2880.0 - u2 / 181440.0))
        fp = 0.5 + u * (1.0 / 12.0 - u2 * (1.0 / 720.0 - u2 / 30240.0))
        du = xp.where(small, (f - log_ceiling_ratio) / fp, du)
    elif small.any():
        us = u[small]
        u2 = us * us
        f = 0.5 * us + u2 * (1.0 / 24.0 - u2 * (1.0 / 2880.0 - u2 / 181440.0))
        fp = 0.5 + us * (1.0 / 12.0 - u2 * (1.0 / 720.0 - u2 / 30240.0))
        du[small] = (f - xp.asarray(log_ceiling_ratio)[small]) / fp
    return u - du, du


def spectral_efficiency_nats(log_ceiling_ratio):
    """u = ln(1 + a/b) at which the rate is ``exp(-L)`` times the ceiling a / ln 2 (L > 0)."""
    xp = namespace(log_ceiling_ratio)
    L = xp.as_float(log_ceiling_ratio)
    u = L + xp.log1p(L)
    # float32 (torch) is at its precision after two steps (measured over L in [1e-7, 3e2]: the
    # bandwidth within 3e-5 of float64, the same error as three or four steps)
    for _ in range(2 if xp.is_torch and L.dtype == xp.float32 else _NEWTON_STEPS):
        u = spectral_efficiency_step(u, L)[0]
    return u


def bandwidth_from_spectral_efficiency_hz(u, gain_hz):
    """b = a / (e^u - 1): the bandwidth at which the spectral efficiency is ``u`` nat/s/Hz."""
    xp = namespace(u, gain_hz)
    return xp.divide(gain_hz, xp.expm1(u))


def inverse_rate_elasticity(u):
    """d ln b / d ln r of the inverse rate at spectral efficiency ``u``: u / (u + e^{-u} - 1).

    1 when bandwidth-limited (large u), growing like 2 / u towards the ceiling (small u).
    """
    xp = namespace(u)
    u = xp.as_float(u)
    den = u + xp.expm1(-u)
    small = u < _SERIES_BELOW
    # u + e^{-u} - 1 = u^2/2 - u^3/6 + u^4/24 - u^5/120 ...
    if not xp.host:  # a GPU, no host sync: the series on every element, selected
        den = xp.where(small, u * u * (0.5 - u * (1.0 / 6.0 - u * (1.0 / 24.0 - u / 120.0))), den)
    elif small.any():
        us = u[small]
        den[small] = us * us * (0.5 - us * (1.0 / 6.0 - us * (1.0 / 24.0 - us / 120.0)))
    return u / den


def required_snr(rate_bps_, bandwidth_hz):
    """SNR p g / (N0 b) at which bandwidth ``b`` carries ``rate_bps_``: 2^(r / b) - 1 (inf for a
    positive rate on no bandwidth or on a bandwidth so small that r / b overflows, 0 for rate 0)."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        snr = np.expm1(np.multiply(rate_bps_, LN2) / bandwidth_hz)
    if np.isnan(snr).any():  # 0 / 0: rate 0 on no bandwidth needs nothing
        snr = np.where(np.isnan(snr), np.where(np.asarray(rate_bps_) > 0.0, np.inf, 0.0), snr)
    return snr


def inverse_rate_newton_hz(rate_bps_, gain_hz):
    """Bandwidth b >= 0 with r(b) = ``rate_bps_`` (0 for rate 0, inf at or above the ceiling)."""
    xp = namespace(rate_bps_, gain_hz)
    r, a = xp.broadcast_arrays(xp.as_float(rate_bps_), xp.as_float(gain_hz))
    if r.ndim == 0:  # the Newton helpers work on arrays
        return inverse_rate_newton_hz(r[None], a[None])[0]
    with xp.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = r * LN2 / a
        ok = (r > 0.0) & (c < 1.0) & (a > 0.0)
        L = -xp.log(xp.where(ok, c, 0.5))
        b = bandwidth_from_spectral_efficiency_hz(spectral_efficiency_nats(L), a)
    return xp.where(r <= 0.0, 0.0, xp.where(ok, b, math.inf))


# ---------------------------------------------------------------------------------------------
# Per-round terms and the E2E latency


@dataclass(frozen=True)
class ModelConstants:
    """Per-scenario constants of the latency model, derived once from a :class:`ScenarioConfig`."""

    n_agents: int
    params: float
    weight_bits: int
    nl_bits_per_token: int  # beta
    kv_bits_per_token: int  # kappa
    compute_efficiency: float
    memory_efficiency: float
    receiver_peak_flops: float
    receiver_mem_bw_bytes_per_s: float
    answer_tokens: int
    bandwidth_hz: float
    latency_cap_s: float
    session: bool = False  # the scenario is a session (its observations carry the receiver's state)


@lru_cache(maxsize=256)
def model_constants(cfg: ScenarioConfig) -> ModelConstants:
    """The constants of the latency model for a scenario (cached: configs are frozen)."""
    w = cfg.workload
    llm = w.llm_profile
    rx = DEVICE_CATALOG[w.receiver_device]
    return ModelConstants(
        n_agents=cfg.n_agents,
        params=llm.params,
        weight_bits=w.weight_bits,
        nl_bits_per_token=nl_bits_per_token(llm.vocab_size),
        kv_bits_per_token=kv_bits_per_token(llm.n_layers, llm.n_kv_heads, llm.head_dim, w.kv_bits),
        compute_efficiency=w.compute_efficiency,
        memory_efficiency=w.memory_efficiency,
        receiver_peak_flops=rx.peak_flops,
        receiver_mem_bw_bytes_per_s=rx.mem_bw_bytes_per_s,
        answer_tokens=w.answer_tokens,
        bandwidth_hz=cfg.channel.bandwidth_hz,
        latency_cap_s=cfg.latency_cap_s,
        session=bool(cfg.session.enabled),
    )


@dataclass(frozen=True)
class RoundTerms:
    """Everything the latency of a round depends on besides the decision; batch shape ``(...)``.

    Arrays ``(..., N, 2)`` hold the NL (index 0) and KV (index 1) value of a term.
    """

    prefill_s: np.ndarray  # S_i (..., N): sender prefill of the context, both media
    extra_compute_s: np.ndarray  # C_i (..., N, 2): NL decoding (K_i tau_dec) | 0
    payload_bits: np.ndarray  # D_i (..., N, 2): K_i beta | L_i kappa
    receiver_s: np.ndarray  # R_i (..., N, 2): receiver prefill of K_i | loading the cache
    answer_s: np.ndarray  # G tau_dec,r (...): the receiver decodes the answer
    gain_hz: np.ndarray  # a_i (..., N): p g / N0
    bandwidth_hz: float  # B
    latency_cap_s: float

    @property
    def n_agents(self) -> int:
        return self.prefill_s.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.prefill_s.shape[:-1]

    def __getitem__(self, index) -> RoundTerms:
        """Rounds ``index`` of a batch (NumPy indexing over the batch axes)."""
        values = (
            self.prefill_s[index],
            self.extra_compute_s[index],
            self.payload_bits[index],
            self.receiver_s[index],
            self.answer_s[index],
            self.gain_hz[index],
            self.bandwidth_hz,
            self.latency_cap_s,
        )
        return _frozen(RoundTerms, values) if type(self.prefill_s) is np.ndarray else RoundTerms(*values)


def _pair(nl, kv) -> np.ndarray:
    """Stack the NL and KV values of a term on a new trailing axis (faster than np.stack)."""
    xp = namespace(nl, kv)
    nl = xp.asarray(nl)
    out = xp.empty((*nl.shape, 2))
    out[..., 0] = nl
    out[..., 1] = kv
    return out


TERM_ARRAY_FIELDS = ("prefill_s", "extra_compute_s", "payload_bits", "receiver_s", "answer_s", "gain_hz")


def concat_terms(parts) -> RoundTerms:
    """Join batches of :class:`RoundTerms` along their first batch axis (``t[None]`` makes a
    single round a batch of one)."""
    first = parts[0]
    arrays = {f: np.concatenate([getattr(p, f) for p in parts], axis=0) for f in TERM_ARRAY_FIELDS}
    return RoundTerms(**arrays, bandwidth_hz=first.bandwidth_hz, latency_cap_s=first.latency_cap_s)


def round_terms(
    consts: ModelConstants,
    snr_db,
    compute_flops,
    mem_bw_bytes_per_s,
    load,
    context_tokens,
    nl_tokens_,
    receiver_load,
    prefill_tokens=None,
    kv_tokens=None,
) -> RoundTerms:
    """Per-agent terms of one round (or a batch) from exactly what the environment observes.

    ``snr_db``, ``compute_flops`` (peak), ``mem_bw_bytes_per_s`` (peak), ``load``,
    ``context_tokens``, ``nl_tokens_``: shape ``(..., N)``; ``receiver_load``: shape ``(...)``.
    In a session (docs/sessions.md) the sender prefills only its ``prefill_tokens`` new tokens
    and the KV medium carries only the ``kv_tokens`` the receiver lacks; both default to
    ``context_tokens`` (a single round).
    """
    c = consts
    xp = namespace(snr_db, load, context_tokens, compute_flops)
    L = xp.as_float(context_tokens)
    K = xp.as_float(nl_tokens_)
    L_pre = L if prefill_tokens is None else xp.as_float(prefill_tokens)
    L_kv = L if kv_tokens is None else xp.as_float(kv_tokens)
    u = xp.as_float(load)
    f_eff = effective_compute_flops(xp.as_float(compute_flops), u, c.compute_efficiency)
    w_eff = effective_mem_bw_bytes_per_s(xp.as_float(mem_bw_bytes_per_s), u, c.memory_efficiency)
    u_r = xp.as_float(receiver_load)
    f_r = effective_compute_flops(c.receiver_peak_flops, u_r, c.compute_efficiency)
    w_r = effective_mem_bw_bytes_per_s(c.receiver_mem_bw_bytes_per_s, u_r, c.memory_efficiency)
    f_r_ = f_r[..., None]
    w_r_ = w_r[..., None]

    prefill = prefill_time_s(c.params, L_pre, f_eff)
    extra = _pair(K * decode_time_per_token_s(c.params, c.weight_bits, f_eff, w_eff), 0.0)
    payload = _pair(K * c.nl_bits_per_token, L_kv * c.kv_bits_per_token)
    receiver = _pair(prefill_time_s(c.params, K, f_r_), L_kv * (c.kv_bits_per_token / 8.0) / w_r_)
    answer = c.answer_tokens * decode_time_per_token_s(c.params, c.weight_bits, f_r, w_r)
    gain = gain_hz_from_snr_db(xp.as_float(snr_db), c.bandwidth_hz)
    return RoundTerms(prefill, extra, payload, receiver, answer, gain, c.bandwidth_hz, c.latency_cap_s)


def select_medium(both, media):
    """Pick the NL (0) or KV (1) value of a ``(..., N, 2)`` term for media ``(..., N)``."""
    xp = namespace(both, media)
    return xp.where(xp.asarray(media) != 0, both[..., 1], both[..., 0])


@dataclass(frozen=True)
class LatencyBreakdown:
    """The E2E latency of a decision and its per-agent parts (batch shape ``(...)``)."""

    latency_s: np.ndarray  # min(T, cap) (...)
    uncapped_latency_s: np.ndarray  # T, inf when an agent with a payload has no rate (...)
    capped: np.ndarray  # T > cap (...)
    media: np.ndarray  # x_i (..., N), 0 = NL, 1 = KV
    bandwidth_hz: np.ndarray  # b_i (..., N)
    rate_bps: np.ndarray  # r_i(b_i) (..., N)
    compute_s: np.ndarray  # S_i + C_i(x_i) (..., N)
    transmission_s: np.ndarray  # D_i(x_i) / r_i(b_i) (..., N), 0 without payload
    finish_s: np.ndarray  # compute + transmission (..., N)
    receiver_s: np.ndarray  # R_i(x_i) (..., N)
    answer_s: np.ndarray  # G tau_dec,r (...)


def transmission_time_s(payload_bits, rate):
    """D / r, with 0 for no payload and inf for a payload at zero rate."""
    xp = namespace(payload_bits, rate)
    on_host = not xp.is_torch and type(rate) is np.ndarray and rate.dtype == np.float64
    least = host_min_max(rate)[0] if on_host and rate.ndim and rate.size else 0.0
    if least > 0.0:  # NumPy, every rate positive (NaN fails it): the operations below without where
        if least >= 1.0:  # D / r cannot overflow
            t = payload_bits / rate
        else:
            with xp.errstate(over="ignore"):  # a subnormal rate: D / r overflows to inf (never sent)
                t = payload_bits / rate
        if type(payload_bits) is np.ndarray and payload_bits.size and host_min_max(payload_bits)[0] > 0.0:
            return t  # every payload positive
        return xp.where(payload_bits > 0.0, t, 0.0)
    pos = rate > 0.0
    with xp.errstate(over="ignore"):  # a subnormal rate: D / r overflows to inf (never sent)
        t = xp.where(pos, payload_bits / xp.where(pos, rate, 1.0), math.inf)
    return xp.where(payload_bits > 0.0, t, 0.0)


_WIDE_BATCH = 2048  # elements from which a reduction over a short agents axis goes row by row


def sum_over_agents(x: np.ndarray) -> np.ndarray:
    """``x.sum(axis=-1)``; on wide batches summed agent by agent (a reduction along a short,
    contiguous last axis is slow in NumPy). Small inputs, a batch of one included, always take the
    plain path, so a single round and a batch of one agree bit for bit."""
    if not isinstance(x, np.ndarray):  # torch: one reduction
        return x.sum(-1)
    if x.size < _WIDE_BATCH or x.ndim < 2:
        return np.add.reduce(x, axis=-1)  # what x.sum(axis=-1) calls, without its Python wrapper
    return np.add.reduce(np.moveaxis(x, -1, 0).copy(), axis=0)


def max_over_agents(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=-1)``, fast on wide batches (exact: the maximum does not depend on order)."""
    if not isinstance(x, np.ndarray):  # torch
        return x.amax(-1)
    if x.size < _WIDE_BATCH or x.ndim < 2:
        return np.maximum.reduce(x, axis=-1)  # what x.max(axis=-1) calls, without its Python wrapper
    return np.maximum.reduce(np.moveaxis(x, -1, 0).copy(), axis=0)


_EVEN_INDICES: dict[int, np.ndarray] = {}


def _even_indices(n: int) -> np.ndarray:
    """``[0, 2, ..., 2n - 2]``: the flat index of the NL entries of an ``(n, 2)`` term (cached)."""
    even = _EVEN_INDICES.get(n)
    if even is None:
        even = _EVEN_INDICES[n] = np.arange(0, 2 * n, 2)
        even.flags.writeable = False
    return even


def latency(terms: RoundTerms, media, bandwidth_hz) -> LatencyBreakdown:
    """T(x, b) = max_i [S_i + C_i + D_i / r_i(b_i)] + sum_i R_i + G tau_dec,r, capped at the cap."""
    xp = namespace(terms.prefill_s, media, bandwidth_hz)
    x = xp.asarray(media)
    b = xp.as_float(bandwidth_hz)
    kv = x != 0
    extra, payload, rx = terms.extra_compute_s, terms.payload_bits, terms.receiver_s
    if not xp.is_torch and kv.ndim == 1 and extra.shape == payload.shape == rx.shape == (kv.shape[0], 2):
        # one round on NumPy: each term's NL or KV entry by a flat index (what the wheres pick)
        pick = _even_indices(kv.shape[0]) + kv
        extra, payload, rx = extra.ravel()[pick], payload.ravel()[pick], rx.ravel()[pick]
    else:
        extra = xp.where(kv, extra[..., 1], extra[..., 0])
        payload = xp.where(kv, payload[..., 1], payload[..., 0])
        rx = xp.where(kv, rx[..., 1], rx[..., 0])
    compute = terms.prefill_s + extra
    r = rate_bps(b, terms.gain_hz)
    tx = transmission_time_s(payload, r)
    finish = compute + tx
    t = max_over_agents(finish) + sum_over_agents(rx) + terms.answer_s
    # in LatencyBreakdown's field order: latency_s, uncapped_latency_s, capped, media, bandwidth_hz,
    # rate_bps, compute_s, transmission_s, finish_s, receiver_s, answer_s
    values = (xp.minimum(t, terms.latency_cap_s), t, t > terms.latency_cap_s, x, b, r, compute, tx, finish, rx,
              terms.answer_s)
    return LatencyBreakdown(*values) if xp.is_torch else _frozen(LatencyBreakdown, values)


def _frozen(cls, values: tuple):
    """``cls(*values)`` for the frozen dataclasses :class:`RoundTerms` and
    :class:`LatencyBreakdown` on NumPy, without the generated ``__init__``, which sets each field
    through ``object.__setattr__`` (about half of the 1.3 us it takes to build one; the single env
    builds two a step). The same object: its fields in ``__dict__``, still frozen. Not for torch
    (``torch.compile`` traces the plain constructor)."""
    obj = object.__new__(cls)
    obj.__dict__.update(zip(_FIELD_NAMES[cls], values))
    return obj


def unit_terms(
    consts: ModelConstants, snr_db, compute_flops, mem_bw_bytes_per_s, load, new_tokens, receiver_load
) -> RoundTerms:
    """A session round's terms per token (docs/sessions.md): :func:`round_terms` with the sender's
    prefill of its ``new_tokens`` and *one* token of NL summary and of KV delta.

    Everything but the prefill, the answer and the channel is linear in those token counts, so
    :func:`scale_terms` turns these into the round's terms for any receiver state. The
    environments compute them once per chunk of rounds (they do not depend on the actions).
    """
    xp = namespace(new_tokens, snr_db)
    one = xp.ones(xp.shape(new_tokens))
    return round_terms(
        consts, snr_db, compute_flops, mem_bw_bytes_per_s, load, one, one, receiver_load,
        prefill_tokens=new_tokens, kv_tokens=one,
    )


def scale_terms(unit: RoundTerms, nl_tokens_, kv_delta_tokens) -> RoundTerms:
    """The terms of a round from its :func:`unit_terms`: NL terms times the summary's ``K``
    tokens, KV terms times the ``L - kv`` tokens the receiver lacks (arrays ``(..., N)``)."""
    xp = namespace(unit.prefill_s)
    tokens = xp.empty(unit.extra_compute_s.shape)
    tokens[..., 0] = nl_tokens_
    tokens[..., 1] = kv_delta_tokens
    return RoundTerms(
        unit.prefill_s,
        unit.extra_compute_s * tokens,
        unit.payload_bits * tokens,
        unit.receiver_s * tokens,
        unit.answer_s,
        unit.gain_hz,
        unit.bandwidth_hz,
        unit.latency_cap_s,
    )


def terms_from_observation(consts: ModelConstants, obs) -> RoundTerms:
    """The model terms of the round(s) an environment observation describes.

    ``obs`` is the environment's Dict observation (one round, or a batch with a leading axis, as a
    vectorised env returns it; NumPy arrays or torch tensors). With ``csi_delay = 0`` these are
    exactly the terms the environment charges: the observation is a sufficient statistic. For a
    session scenario (``consts.session``, docs/sessions.md) they are the session's terms: the
    prefill of ``new_tokens``, the NL summary of ``nl_tokens`` and the KV delta
    ``context_tokens - kv_resident_tokens``.
    """
    xp = namespace(obs["snr_db"])
    receiver_load = xp.as_float(obs["receiver_load"])[..., 0]
    if consts.session:
        if "new_tokens" not in obs:
            raise ValueError(
                "terms_from_observation: the constants are a session scenario's but the observation "
                "has no session keys (new_tokens, kv_resident_tokens); pass the constants of its scenario"
            )
        unit = unit_terms(
            consts, obs["snr_db"], obs["compute_flops"], obs["mem_bw_bytes_per_s"], obs["load"],
            obs["new_tokens"], receiver_load,
        )
        kv_delta = xp.subtract(obs["context_tokens"], obs["kv_resident_tokens"], dtype=xp.float64)
        return scale_terms(unit, obs["nl_tokens"], kv_delta)
    return round_terms(
        consts,
        obs["snr_db"],
        obs["compute_flops"],
        obs["mem_bw_bytes_per_s"],
        obs["load"],
        obs["context_tokens"],
        obs["nl_tokens"],
        receiver_load,
    )


_FIELD_NAMES = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (RoundTerms, LatencyBreakdown)}
