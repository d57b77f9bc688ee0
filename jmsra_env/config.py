"""Scenario configuration: frozen, validated dataclasses with the source of every default.

Every quantity carries its unit in its name (``_s``, ``_hz``, ``_bits``, ``_bps``, ``_dbm``...).
The defaults and their sources are those of ``docs/model.md``.

Build a scenario with :func:`make_config` (or :meth:`ScenarioConfig.with_overrides`), which accepts a
mapping of overrides: top-level keys (``n_agents``), keys of a sub-config given flat (``bandwidth_hz``)
or dotted (``channel.bandwidth_hz``), or a nested mapping (``{"channel": {"bandwidth_hz": 1e7}}``).
An unknown key is a :class:`ValueError` that names it and suggests the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LLMProfile",
    "DeviceProfile",
    "ChannelConfig",
    "WorkloadConfig",
    "SessionConfig",
    "ScenarioConfig",
    "LLM_CATALOG",
    "DEVICE_CATALOG",
    "make_config",
    "parse_overrides",
    "SPEED_OF_LIGHT_MPS",
    "UnknownKeyError",
]

SPEED_OF_LIGHT_MPS = 299_792_458.0


def _require(cond: bool, name: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"config field '{name}' must be {allowed}; got {value!r}")


def _real(value: Any) -> float | None:
    """``value`` as a finite Python float, or None when it is not one.

    Python and NumPy ints and floats are numbers; bools are not (``True`` is not 1 Hz); an int too
    large for a float (``OverflowError``) or a non-finite value is not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        v = float(value)
    except (OverflowError, TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _positive(name: str, value: Any, hi: float = math.inf) -> float:
    """A finite number in (0, ``hi``], as a Python float; ``ValueError`` naming the field else."""
    v = _real(value)
    bound = "" if hi == math.inf else f" and <= {hi:g}"
    _require(v is not None and 0.0 < v <= hi, name, f"a finite number > 0{bound}", value)
    return v


def _in_range(name: str, value: Any, lo: float, hi: float, *, lo_open=False, hi_open=False) -> float:
    """A finite number in the given interval, as a Python float; ``ValueError`` naming the field."""
    v = _real(value)
    ok = v is not None and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    _require(ok, name, f"a number in {lb}{lo:g}, {hi:g}{rb}", value)
    return v


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    """A Python or NumPy integer (not a bool) in [lo, hi], as a Python int."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and lo <= value <= hi
    _require(ok, name, f"an integer in [{lo}, {hi}]", value)
    return int(value)


def _set_numbers(obj: Any, prefix: str, rules: Mapping[str, Any]) -> None:
    """Validate and normalise numeric fields of a frozen dataclass: ``rules`` maps a field to a
    function ``(name, value) -> normalised value`` that raises ``ValueError`` naming the field."""
    for f, rule in rules.items():
        object.__setattr__(obj, f, rule(f"{prefix}{f}", getattr(obj, f)))


# Upper bounds on magnitudes. They are far beyond any physical scenario and exist so that every
# accepted config gives finite observations and finite latencies in float64 (e.g. a distance near
# 9e307 m made the distance walk overflow into NaN observations).
MAX_BANDWIDTH_HZ = 1e12  # 1 THz: above any radio channel; a = B 10^(SNR/10) stays <= 1e27 Hz
MAX_CARRIER_HZ = 1e12  # 1 THz
MAX_DISTANCE_M = 1e6  # 1000 km: far beyond a cell (the 3GPP path-loss fit is for < 5 km)
MAX_ROUND_INTERVAL_S = 1e6  # ~11 days per round
MAX_LATENCY_CAP_S = 1e9
MAX_TOKENS = 10**9  # context, answer lengths: payloads L kappa stay < 1e16 bits
MAX_EPISODE_ROUNDS = 10**9
MAX_POOL_BYTES = 1e18  # 1 EB: any receiver memory; pool fractions stay finite
MIN_EFFICIENCY = 1e-3  # eta_c, eta_m: below 0.1 % of peak the per-token times overflow for subnormals


# ---------------------------------------------------------------------------------------------
# Catalogs


@dataclass(frozen=True)
class LLMProfile:
    """Architecture of a decoder-only LLM (from the model's published config)."""

    name: str
    params: float  # parameter count P
    n_layers: int  # transformer layers n_L
    n_kv_heads: int  # key/value heads n_kv (GQA)
    head_dim: int  # per-head dimension d_h
    vocab_size: int  # vocabulary V

    def __post_init__(self) -> None:
        p = f"llm[{self.name}]."
        _set_numbers(self, p, {"params": _positive})
        for f in ("n_layers", "n_kv_heads", "head_dim"):
            object.__setattr__(self, f, _integer(p + f, getattr(self, f), 1, 1 << 20))
        object.__setattr__(self, "vocab_size", _integer(p + "vocab_size", self.vocab_size, 2, 1 << 32))


# Architectures from the models' published configs (docs/model.md).
LLM_CATALOG: dict[str, LLMProfile] = {
    p.name: p
    for p in (
        LLMProfile("llama-3.2-1b", 1.24e9, 16, 8, 64, 128256),
        LLMProfile("llama-3.2-3b", 3.21e9, 28, 8, 128, 128256),
        LLMProfile("llama-3.1-8b", 8.03e9, 32, 8, 128, 128256),
        LLMProfile("qwen2.5-0.5b", 0.49e9, 24, 2, 64, 151936),
        LLMProfile("qwen2.5-1.5b", 1.54e9, 28, 2, 128, 151936),
        LLMProfile("qwen2.5-7b", 7.62e9, 28, 4, 128, 152064),
        LLMProfile("mistral-7b", 7.24e9, 32, 8, 128, 32768),
    )
}


@dataclass(frozen=True)
class DeviceProfile:
    """Peak compute (FLOP/s) and memory bandwidth (byte/s) of an edge device."""

    name: str
    peak_flops: float
    mem_bw_bytes_per_s: float

    def __post_init__(self) -> None:
        _set_numbers(self, f"device[{self.name}].", {"peak_flops": _positive, "mem_bw_bytes_per_s": _positive})


DEVICE_CATALOG: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        # NVIDIA datasheet: 40 TOPS INT8, 68 GB/s.
        DeviceProfile("jetson-orin-nano-8gb", 10e12, 68e9),
        # NVIDIA DS-10662: 256-bit LPDDR5 at 204.8 GB/s.
        DeviceProfile("jetson-agx-orin-64gb", 42e12, 204.8e9),
        # Vendor figures: 45 TOPS NPU, LPDDR5X 76.8 GB/s.
        DeviceProfile("snapdragon-8-gen-3", 8e12, 76.8e9),
    )
}


def _lookup(catalog: Mapping[str, Any], name: str, field_name: str) -> Any:
    key = name.lower() if isinstance(name, str) else None
    if key not in catalog:
        raise ValueError(
            f"config field '{field_name}' must be one of {sorted(catalog)}; got {name!r}"
        )
    return catalog[key]


# ---------------------------------------------------------------------------------------------
# Sub-configs


@dataclass(frozen=True)
class ChannelConfig:
    """FDMA uplink and mobility (docs/model.md, 'Channel' and 'Default scenario')."""

    bandwidth_hz: float = 20e6  # common 5G/6G MEC uplink setting
    tx_power_dbm: float = 23.0  # 3GPP UE power class 3
    noise_psd_dbm_per_hz: float = -174.0  # thermal noise at 290 K
    noise_figure_db: float = 9.0  # typical UE/BS noise figure
    pathloss_const_db: float = 128.1  # 3GPP macro: 128.1 + 37.6 log10(d / 1 km)
    pathloss_exponent_db: float = 37.6  # 3GPP macro slope (dB per decade of km)
    shadowing_sigma_db: float = 8.0  # 3GPP NLOS log-normal shadowing
    decorrelation_distance_m: float = 50.0  # Gudmundson correlation distance
    carrier_hz: float = 3.5e9  # 5G mid band, sets the Doppler f_d = v f_c / c
    speed_mps: float = 1.5  # walking-speed robots
    distance_min_m: float = 20.0  # one cell, agents in [20, 250] m
    distance_max_m: float = 250.0
    # Gauss-Markov correlation of the Rayleigh fading between rounds; None = Jakes J0(2 pi f_d dt).
    fading_correlation: float | None = None
    # Gauss-Markov correlation of the shadowing; None = Gudmundson exp(-v dt / d_corr).
    shadowing_correlation: float | None = None

    def __post_init__(self) -> None:
        def db(name, value):
            return _in_range(name, value, -1e3, 1e3)

        def positive(hi=math.inf):
            return lambda name, value: _positive(name, value, hi)

        _set_numbers(self, "channel.", {
            "bandwidth_hz": positive(MAX_BANDWIDTH_HZ),
            "tx_power_dbm": db,
            "noise_psd_dbm_per_hz": db,
            "noise_figure_db": db,
            "pathloss_const_db": db,
            "pathloss_exponent_db": positive(1e3),
            "shadowing_sigma_db": lambda n, v: _in_range(n, v, 0.0, 30.0),
            "decorrelation_distance_m": positive(),
            "carrier_hz": positive(MAX_CARRIER_HZ),
            "speed_mps": lambda n, v: _in_range(n, v, 0.0, 1e3),
            "distance_min_m": positive(MAX_DISTANCE_M),
            "distance_max_m": lambda n, v: _in_range(n, v, self.distance_min_m, MAX_DISTANCE_M),
        })
        for f in ("fading_correlation", "shadowing_correlation"):
            if getattr(self, f) is not None:
                _set_numbers(self, "channel.", {f: lambda n, v: _in_range(n, v, -1.0, 1.0)})


@dataclass(frozen=True)
class WorkloadConfig:
    """LLM, devices, per-round workload and background load (docs/model.md)."""

    llm: str = "llama-3.2-1b"  # smallest Llama 3.2: fits every device in the catalog
    weight_bits: int = 4  # 4-bit weight quantisation, usual on edge devices
    kv_bits: int = 8  # 8-bit KV cache quantisation
    compute_efficiency: float = 0.5  # eta_c: achievable fraction of peak FLOP/s
    memory_efficiency: float = 0.7  # eta_m: achievable fraction of peak memory bandwidth
    # Sender devices are drawn per episode from these (heterogeneous team).
    sender_devices: tuple[str, ...] = (
        "jetson-orin-nano-8gb",
        "jetson-agx-orin-64gb",
        "snapdragon-8-gen-3",
    )
    receiver_device: str = "jetson-agx-orin-64gb"  # the coordinator: the strongest device
    load_max: float = 0.8  # background load u in [0, u_max] on shared devices
    load_step: float = 0.1  # u += load_step * N(0, 1) per round, clipped
    context_min_tokens: int = 256  # context L_i ~ U{256..2048} per round: perception/dialogue
    context_max_tokens: int = 2048
    nl_ratio_min: float = 0.05  # NL summary K_i = ceil(rho_i L_i), rho_i ~ U[0.05, 0.25]
    nl_ratio_max: float = 0.25
    answer_tokens: int = 64  # G: a short joint decision decoded by the receiver

    def __post_init__(self) -> None:
        devs = self.sender_devices
        if isinstance(devs, str):
            devs = (devs,)
        _require(
            isinstance(devs, (list, tuple)) and len(devs) >= 1,
            "workload.sender_devices",
            "a non-empty list of device names",
            self.sender_devices,
        )
        object.__setattr__(self, "llm", _lookup(LLM_CATALOG, self.llm, "workload.llm").name)
        object.__setattr__(
            self,
            "sender_devices",
            tuple(_lookup(DEVICE_CATALOG, d, "workload.sender_devices").name for d in devs),
        )
        object.__setattr__(
            self, "receiver_device", _lookup(DEVICE_CATALOG, self.receiver_device, "workload.receiver_device").name
        )

        def unit(lo_open=False, hi_open=False):
            return lambda n, v: _in_range(n, v, 0.0, 1.0, lo_open=lo_open, hi_open=hi_open)

        def integer(lo, hi):
            return lambda n, v: _integer(n, v, lo, hi)

        def efficiency(name, value):
            return _in_range(name, value, MIN_EFFICIENCY, 1.0)

        _set_numbers(self, "workload.", {
            "weight_bits": integer(1, 32),
            "kv_bits": integer(1, 32),
            "compute_efficiency": efficiency,
            "memory_efficiency": efficiency,
            "load_max": unit(hi_open=True),
            "load_step": unit(),
            "context_min_tokens": integer(0, MAX_TOKENS),
            "context_max_tokens": integer(0, MAX_TOKENS),
            "answer_tokens": integer(0, MAX_TOKENS),
            "nl_ratio_min": unit(),
            "nl_ratio_max": lambda n, v: _in_range(n, v, self.nl_ratio_min, 1.0),
        })
        _require(
            self.context_max_tokens >= self.context_min_tokens,
            "workload.context_max_tokens",
            f"an integer >= context_min_tokens ({self.context_min_tokens})",
            self.context_max_tokens,
        )

    @property
    def llm_profile(self) -> LLMProfile:
        return LLM_CATALOG[self.llm]

    @property
    def receiver_profile(self) -> DeviceProfile:
        return DEVICE_CATALOG[self.receiver_device]

    @property
    def sender_profiles(self) -> tuple[DeviceProfile, ...]:
        return tuple(DEVICE_CATALOG[d] for d in self.sender_devices)


MIB = 1 << 20  # bytes in a MiB
DEFAULT_KV_POOL_BYTES_PER_AGENT = 160 * MIB  # default KV pool: N x 160 MiB (docs/sessions.md)


@dataclass(frozen=True)
class SessionConfig:
    """Sessions (docs/sessions.md): contexts grow round after round and the receiver keeps the
    KV caches it was sent in a pool of limited size. Off by default: single-round scenarios."""

    enabled: bool = False  # off: every round independent (the single-round scenarios)
    # Each round after the first brings dL ~ U{64..512} new tokens per agent (a few turns of
    # dialogue/perception per round; 288 on average, a quarter of the mean first context).
    new_tokens_min: int = 64
    new_tokens_max: int = 512
    # Receiver's KV pool in bytes; None = n_agents x 160 MiB (640 MiB at N = 4: about half of the
    # 1.2 GiB a 64-round session's caches reach on average at 16 KiB/token: binds mid-episode).
    kv_pool_bytes: float | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.enabled, (bool, np.bool_)), "session.enabled", "a bool", self.enabled)
        object.__setattr__(self, "enabled", bool(self.enabled))
        _set_numbers(self, "session.", {
            "new_tokens_min": lambda n, v: _integer(n, v, 0, MAX_TOKENS),
            "new_tokens_max": lambda n, v: _integer(n, v, 0, MAX_TOKENS),
        })
        _require(
            self.new_tokens_max >= self.new_tokens_min,
            "session.new_tokens_max",
            f"an integer >= new_tokens_min ({self.new_tokens_min})",
            self.new_tokens_max,
        )
        if self.kv_pool_bytes is not None:
            _set_numbers(self, "session.", {"kv_pool_bytes": lambda n, v: _positive(n, v, MAX_POOL_BYTES)})


@dataclass(frozen=True)
class ScenarioConfig:
    """A full scenario: team size, episode, channel and workload."""

    n_agents: int = 4  # LatentMAS uses 4-agent teams (variants 8, 16)
    round_interval_s: float = 1.0  # dt: one collaboration round
    episode_rounds: int = 64  # rounds per episode, then truncated
    latency_cap_s: float = 60.0  # T is capped here (an agent with a payload and no bandwidth)
    csi_delay: int = 0  # rounds of staleness of the observed channel SNR
    jmsra_in_info: bool = False  # also put the JMSRA latency of the round into info (costs a solve)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    session: SessionConfig = field(default_factory=SessionConfig)

    def __post_init__(self) -> None:
        _set_numbers(self, "", {
            "n_agents": lambda n, v: _integer(n, v, 1, 1024),
            "round_interval_s": lambda n, v: _positive(n, v, MAX_ROUND_INTERVAL_S),
            "episode_rounds": lambda n, v: _integer(n, v, 1, MAX_EPISODE_ROUNDS),
            "latency_cap_s": lambda n, v: _positive(n, v, MAX_LATENCY_CAP_S),
            "csi_delay": lambda n, v: _integer(n, v, 0, 64),
        })
        _require(
            isinstance(self.jmsra_in_info, (bool, np.bool_)), "jmsra_in_info", "a bool", self.jmsra_in_info
        )
        object.__setattr__(self, "jmsra_in_info", bool(self.jmsra_in_info))
        _require(isinstance(self.channel, ChannelConfig), "channel", "a ChannelConfig", self.channel)
        _require(isinstance(self.workload, WorkloadConfig), "workload", "a WorkloadConfig", self.workload)
        _require(isinstance(self.session, SessionConfig), "session", "a SessionConfig", self.session)

    # -- derived quantities ------------------------------------------------------------------

    @property
    def fading_correlation(self) -> float:
        """Gauss-Markov coefficient of the fading: configured, or Jakes J0(2 pi f_d dt)."""
        if self.channel.fading_correlation is not None:
            return float(self.channel.fading_correlation)
        from scipy.special import j0

        doppler_hz = self.channel.speed_mps * self.channel.carrier_hz / SPEED_OF_LIGHT_MPS
        return float(j0(2.0 * math.pi * doppler_hz * self.round_interval_s))

    @property
    def shadowing_correlation(self) -> float:
        """AR(1) coefficient of the shadowing: configured, or Gudmundson exp(-v dt / d_corr)."""
        if self.channel.shadowing_correlation is not None:
            return float(self.channel.shadowing_correlation)
        return math.exp(
            -self.channel.speed_mps * self.round_interval_s / self.channel.decorrelation_distance_m
        )

    @property
    def kv_pool_bytes(self) -> float:
        """The receiver's KV pool (bytes): configured, or ``n_agents x 160 MiB``."""
        if self.session.kv_pool_bytes is not None:
            return float(self.session.kv_pool_bytes)
        return float(self.n_agents * DEFAULT_KV_POOL_BYTES_PER_AGENT)

    # -- overrides ---------------------------------------------------------------------------

    def with_overrides(self, overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> ScenarioConfig:
        """A copy with ``overrides`` applied (see the module docstring for the accepted keys)."""
        merged: dict[str, Any] = {}
        for src in (overrides or {}), kwargs:
            if not isinstance(src, Mapping):
                raise ValueError(f"config overrides must be a mapping; got {type(src).__name__}")
            merged.update(src)
        top: dict[str, Any] = {}
        sub: dict[str, dict[str, Any]] = {name: {} for name in _SUB_CONFIGS}
        sub_fields = {name: {f.name for f in dataclasses.fields(c)} for name, c in _SUB_CONFIGS.items()}
        top_fields = {f.name for f in dataclasses.fields(ScenarioConfig)}
        for key, value in merged.items():
            if not isinstance(key, str):
                raise ValueError(f"config keys must be strings; got {key!r}")
            if "." in key:
                head, _, rest = key.partition(".")
                if head not in sub or rest not in sub_fields[head]:
                    _unknown(key, _all_keys())
                sub[head][rest] = value
            elif key in sub and isinstance(value, Mapping):
                for k2, v2 in value.items():
                    if k2 not in sub_fields[key]:
                        _unknown(f"{key}.{k2}", _all_keys())
                    sub[key][k2] = v2
            elif key in top_fields:
                top[key] = value
            else:
                owners = [name for name, names in sub_fields.items() if key in names]
                if not owners:
                    _unknown(key, _all_keys())
                sub[owners[0]][key] = value
        parts = {}
        for name, cls in _SUB_CONFIGS.items():
            parts[name] = top.pop(name, getattr(self, name))
            _require(isinstance(parts[name], cls), name, f"a {cls.__name__} or a mapping", parts[name])
            if sub[name]:
                parts[name] = dataclasses.replace(parts[name], **sub[name])
        return dataclasses.replace(self, **parts, **top)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (round-trips through :func:`make_config`)."""
        d = dataclasses.asdict(self)
        d["workload"]["sender_devices"] = list(d["workload"]["sender_devices"])
        return d


_SUB_CONFIGS = {"channel": ChannelConfig, "workload": WorkloadConfig, "session": SessionConfig}


def _all_keys() -> list[str]:
    keys = [f.name for f in dataclasses.fields(ScenarioConfig)]
    for c in _SUB_CONFIGS.values():
        keys += [f.name for f in dataclasses.fields(c)]
    return keys


class UnknownKeyError(ValueError, TypeError):
    """An unknown config key, given as a mapping key or a keyword argument.

    A ``ValueError`` (the project's error for bad input) and a ``TypeError`` (what Python raises for
    an unexpected keyword argument): libraries that pass optional keywords and drop them on a
    ``TypeError`` naming them (TorchRL's ``GymEnv`` passes ``frameskip``) work unchanged.
    """


def _unknown(key: str, valid: list[str]) -> None:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownKeyError(
        f"unknown config key {key!r} (unexpected keyword argument {key!r}).{hint} "
        f"Valid keys: {sorted(set(valid))}"
    )


def parse_overrides(items) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` overrides to a mapping (values parsed as JSON, else strings).

    ``ValueError`` for an item without ``=`` or without a key; keys are checked by
    :func:`make_config`.
    """
    import json

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config expects KEY=VALUE; got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def make_config(
    config: ScenarioConfig | Mapping[str, Any] | None = None, **overrides: Any
) -> ScenarioConfig:
    """Build a validated :class:`ScenarioConfig` from a config, a mapping of overrides, or keywords."""
    if isinstance(config, ScenarioConfig):
        return config.with_overrides(overrides) if overrides else config
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(
            f"config must be a ScenarioConfig or a mapping of overrides; got {type(config).__name__}"
        )
    return ScenarioConfig().with_overrides(config or {}, **overrides)
