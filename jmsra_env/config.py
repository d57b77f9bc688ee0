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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
]

SPEED_OF_LIGHT_MPS = 299_792_458.0


def _require(cond: bool, name: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"config field '{name}' must be {allowed}; got {value!r}")


def _positive(name: str, value: float) -> None:
    _require(
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
        name,
        "a finite number > 0",
        value,
    )


def _in_range(name: str, value: float, lo: float, hi: float, *, lo_open=False, hi_open=False) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    _require(ok, name, f"in {lb}{lo}, {hi}{rb}", value)


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
        _positive(f"llm[{self.name}].params", self.params)
        for f in ("n_layers", "n_kv_heads", "head_dim", "vocab_size"):
            v = getattr(self, f)
            _require(isinstance(v, int) and v >= 1, f"llm[{self.name}].{f}", "an integer >= 1", v)
        _require(self.vocab_size >= 2, f"llm[{self.name}].vocab_size", "an integer >= 2", self.vocab_size)


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
        _positive(f"device[{self.name}].peak_flops", self.peak_flops)
        _positive(f"device[{self.name}].mem_bw_bytes_per_s", self.mem_bw_bytes_per_s)


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
    key = name.lower() if isinstance(name, str) else name
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
        _positive("channel.bandwidth_hz", self.bandwidth_hz)
        for f in ("tx_power_dbm", "noise_psd_dbm_per_hz", "noise_figure_db", "pathloss_const_db"):
            _in_range(f"channel.{f}", getattr(self, f), -1e3, 1e3)
        _positive("channel.pathloss_exponent_db", self.pathloss_exponent_db)
        _in_range("channel.shadowing_sigma_db", self.shadowing_sigma_db, 0.0, 30.0)
        _positive("channel.decorrelation_distance_m", self.decorrelation_distance_m)
        _positive("channel.carrier_hz", self.carrier_hz)
        _in_range("channel.speed_mps", self.speed_mps, 0.0, 1e3)
        _positive("channel.distance_min_m", self.distance_min_m)
        _require(
            isinstance(self.distance_max_m, (int, float))
            and math.isfinite(self.distance_max_m)
            and self.distance_max_m >= self.distance_min_m,
            "channel.distance_max_m",
            f"a finite number >= distance_min_m ({self.distance_min_m})",
            self.distance_max_m,
        )
        for f in ("fading_correlation", "shadowing_correlation"):
            v = getattr(self, f)
            if v is not None:
                _in_range(f"channel.{f}", v, -1.0, 1.0)


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
        if isinstance(self.sender_devices, (list, str)):
            devs = (self.sender_devices,) if isinstance(self.sender_devices, str) else self.sender_devices
            object.__setattr__(self, "sender_devices", tuple(devs))
        _lookup(LLM_CATALOG, self.llm, "workload.llm")
        object.__setattr__(self, "llm", self.llm.lower())
        _require(
            len(self.sender_devices) >= 1, "workload.sender_devices", "a non-empty list of device names",
            self.sender_devices,
        )
        object.__setattr__(
            self,
            "sender_devices",
            tuple(_lookup(DEVICE_CATALOG, d, "workload.sender_devices").name for d in self.sender_devices),
        )
        object.__setattr__(
            self, "receiver_device", _lookup(DEVICE_CATALOG, self.receiver_device, "workload.receiver_device").name
        )
        for f in ("weight_bits", "kv_bits"):
            v = getattr(self, f)
            _require(isinstance(v, int) and 1 <= v <= 32, f"workload.{f}", "an integer in [1, 32]", v)
        _in_range("workload.compute_efficiency", self.compute_efficiency, 0.0, 1.0, lo_open=True)
        _in_range("workload.memory_efficiency", self.memory_efficiency, 0.0, 1.0, lo_open=True)
        _in_range("workload.load_max", self.load_max, 0.0, 1.0, hi_open=True)
        _in_range("workload.load_step", self.load_step, 0.0, 1.0)
        for f in ("context_min_tokens", "context_max_tokens", "answer_tokens"):
            v = getattr(self, f)
            _require(isinstance(v, int) and v >= 0, f"workload.{f}", "an integer >= 0", v)
        _require(
            self.context_max_tokens >= self.context_min_tokens,
            "workload.context_max_tokens",
            f"an integer >= context_min_tokens ({self.context_min_tokens})",
            self.context_max_tokens,
        )
        _in_range("workload.nl_ratio_min", self.nl_ratio_min, 0.0, 1.0)
        _in_range("workload.nl_ratio_max", self.nl_ratio_max, self.nl_ratio_min, 1.0)

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
        _require(isinstance(self.enabled, bool), "session.enabled", "a bool", self.enabled)
        for f in ("new_tokens_min", "new_tokens_max"):
            v = getattr(self, f)
            _require(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"session.{f}", "an integer >= 0", v
            )
        _require(
            self.new_tokens_max >= self.new_tokens_min,
            "session.new_tokens_max",
            f"an integer >= new_tokens_min ({self.new_tokens_min})",
            self.new_tokens_max,
        )
        if self.kv_pool_bytes is not None:
            _positive("session.kv_pool_bytes", self.kv_pool_bytes)


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
        _require(
            isinstance(self.n_agents, int) and not isinstance(self.n_agents, bool) and 1 <= self.n_agents <= 1024,
            "n_agents",
            "an integer in [1, 1024]",
            self.n_agents,
        )
        _positive("round_interval_s", self.round_interval_s)
        _require(
            isinstance(self.episode_rounds, int) and self.episode_rounds >= 1,
            "episode_rounds",
            "an integer >= 1",
            self.episode_rounds,
        )
        _positive("latency_cap_s", self.latency_cap_s)
        _require(
            isinstance(self.csi_delay, int) and 0 <= self.csi_delay <= 64,
            "csi_delay",
            "an integer in [0, 64]",
            self.csi_delay,
        )
        _require(isinstance(self.jmsra_in_info, bool), "jmsra_in_info", "a bool", self.jmsra_in_info)
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
        for name in _SUB_CONFIGS:
            parts[name] = top.pop(name, getattr(self, name))
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


def _unknown(key: str, valid: list[str]) -> None:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown config key {key!r}.{hint} Valid keys: {sorted(set(valid))}")


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
