"""Configuration: defaults with sources, validation that names the field, overrides."""

import dataclasses

import pytest

from jmsra_env import DEVICE_CATALOG, LLM_CATALOG, ScenarioConfig, make_config


def test_defaults_follow_design():
    cfg = make_config()
    assert cfg.n_agents == 4
    assert cfg.channel.bandwidth_hz == 20e6
    assert cfg.channel.tx_power_dbm == 23.0
    assert cfg.channel.noise_psd_dbm_per_hz + cfg.channel.noise_figure_db == -165.0
    assert cfg.workload.llm == "llama-3.2-1b"
    assert cfg.workload.receiver_device == "jetson-agx-orin-64gb"
    assert set(cfg.workload.sender_devices) == set(DEVICE_CATALOG)
    assert (cfg.episode_rounds, cfg.latency_cap_s, cfg.workload.answer_tokens) == (64, 60.0, 64)
    assert len(LLM_CATALOG) == 7 and len(DEVICE_CATALOG) == 3


def test_configs_are_frozen():
    cfg = make_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_agents = 8


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"bandwidth_hz": -1.0}, "channel.bandwidth_hz"),
        ({"n_agents": 0}, "n_agents"),
        ({"load_max": 1.0}, "workload.load_max"),
        ({"llm": "gpt-5"}, "workload.llm"),
        ({"receiver_device": "toaster"}, "workload.receiver_device"),
        ({"csi_delay": -1}, "csi_delay"),
        ({"fading_correlation": 1.5}, "channel.fading_correlation"),
        ({"context_min_tokens": 100, "context_max_tokens": 50}, "workload.context_max_tokens"),
        ({"latency_cap_s": float("nan")}, "latency_cap_s"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_config(overrides)


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown config key 'bandwith_hz'.*'bandwidth_hz'"):
        make_config({"bandwith_hz": 1e6})
    with pytest.raises(ValueError, match="unknown config key 'channel.nope'"):
        make_config({"channel": {"nope": 1}})
    with pytest.raises(ValueError, match="unknown config key 'workload.bandwidth_hz'"):
        make_config({"workload.bandwidth_hz": 1})


def test_flat_dotted_and_nested_overrides_agree():
    a = make_config({"bandwidth_hz": 10e6, "llm": "qwen2.5-7b"})
    b = make_config({"channel.bandwidth_hz": 10e6, "workload.llm": "Qwen2.5-7B"})
    c = make_config({"channel": {"bandwidth_hz": 10e6}, "workload": {"llm": "qwen2.5-7b"}})
    d = make_config(bandwidth_hz=10e6, llm="qwen2.5-7b")
    assert a == b == c == d
    assert a.channel.bandwidth_hz == 10e6 and a.workload.llm == "qwen2.5-7b"


def test_to_dict_round_trips():
    cfg = make_config(n_agents=8, csi_delay=2, sender_devices=["snapdragon-8-gen-3"])
    assert make_config(cfg.to_dict()) == cfg
    assert isinstance(cfg, ScenarioConfig)


def test_derived_correlations():
    cfg = make_config()
    # Jakes: J0(2 pi f_d dt), f_d = 1.5 m/s * 3.5 GHz / c = 17.5 Hz -> nearly uncorrelated at dt = 1 s
    assert abs(cfg.fading_correlation) < 0.1
    assert make_config(fading_correlation=0.9).fading_correlation == 0.9
    # Gudmundson: exp(-1.5 m / 50 m)
    assert cfg.shadowing_correlation == pytest.approx(0.970445533548508)
