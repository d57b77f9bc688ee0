"""The world process: its random stream is pinned, its steps are named, its chunk is readable."""

from __future__ import annotations

import numpy as np
import pytest

from jmsra_env import model
from jmsra_env.config import make_config
from jmsra_env.world import OBS_KEYS, WorldProcess


def pinned_world() -> WorldProcess:
    """A seeded episode that crosses chunk boundaries, a partial reset and a stale CSI window."""
    cfg = make_config(n_agents=3, csi_delay=1)
    world = WorldProcess(cfg, 2, chunk_rounds=4)
    rng = np.random.default_rng(2026)
    world.reset(rng)
    for s in range(6):
        world.step(rng)
        if s == 2:
            world.reset(rng, np.array([False, True]))
    return world


# Values of world 1 after the steps above, computed before the world process was split into
# named steps: the same seed must keep giving the same rounds.
PINNED = {
    "snr_db": [27.517923868200143, 16.249867400232787, 4.9644680441137865],
    "compute_flops": [10e12, 8e12, 42e12],
    "mem_bw_bytes_per_s": [68e9, 76.8e9, 204.8e9],
    "load": [0.2710658298764867, 0.5310372674027735, 0.25135812042855943],
    "context_tokens": [962.0, 301.0, 1620.0],
    "nl_tokens": [128.0, 40.0, 308.0],
    "receiver_load": [0.3611558833056195],
}
PINNED_GAIN_HZ = [994028886.8396487, 4098244131.505271, 8596630.180231947]
PINNED_PREFILL_S = [0.6545886028626557, 0.3979420688003379, 0.2555484684129659]


def test_a_seeded_episode_reproduces_the_pinned_rounds():
    world = pinned_world()
    obs = world.observation()
    for key, want in PINNED.items():
        np.testing.assert_allclose(obs[key][1], want, rtol=1e-13, atol=0, err_msg=key)
    terms = world.env_terms(1)
    np.testing.assert_allclose(terms.gain_hz, PINNED_GAIN_HZ, rtol=1e-13, atol=0)
    np.testing.assert_allclose(terms.prefill_s, PINNED_PREFILL_S, rtol=1e-13, atol=0)
    assert world.device_index.tolist() == [[1, 2, 1], [0, 2, 1]]


def test_observation_has_exactly_the_obs_keys():
    world = pinned_world()
    assert tuple(world.observation()) == OBS_KEYS


def test_round_arrays_carry_the_summary_ratio_that_gives_the_observed_nl_tokens():
    world = pinned_world()
    rounds = world.round_arrays()
    obs = world.observation()
    assert set(OBS_KEYS) - {"compute_flops", "mem_bw_bytes_per_s"} <= set(rounds)
    ratio = rounds["nl_ratio"]
    cfg = world.cfg.workload
    assert ratio.shape == (2, 3) and np.all((ratio >= cfg.nl_ratio_min) & (ratio <= cfg.nl_ratio_max))
    np.testing.assert_array_equal(model.nl_tokens(obs["context_tokens"], ratio), obs["nl_tokens"])


def test_the_env_observation_space_has_exactly_the_obs_keys():
    from jmsra_env.env import make_observation_space

    assert set(make_observation_space(make_config()).spaces) == set(OBS_KEYS)


class FixedContextWorld(WorldProcess):
    """A subclass that draws its own workload (the extension point sessions use)."""

    def _draw_workload(self, rng, rounds, idx, fresh):
        shape = (rounds, idx.size, self.n_agents)
        return {
            "context_tokens": np.full(shape, 1000.0),
            "nl_ratio": np.full(shape, 0.1),
            "new_tokens": np.full(shape, 7.0 if fresh else 3.0),
        }


def test_a_subclass_workload_is_charged_and_its_extra_arrays_are_kept_per_round():
    world = FixedContextWorld(make_config(n_agents=2), 3, chunk_rounds=2)
    rng = np.random.default_rng(0)
    world.reset(rng)
    assert world.round_arrays()["new_tokens"].tolist() == [[7.0, 7.0]] * 3
    world.step(rng)
    world.step(rng)  # the next chunk: not a fresh episode
    arrays = world.round_arrays()
    assert arrays["new_tokens"].tolist() == [[3.0, 3.0]] * 3
    assert world.observation()["nl_tokens"].tolist() == [[100.0, 100.0]] * 3
    want = model.round_terms(
        world.consts, arrays["snr_db"], world.state.compute_flops, world.state.mem_bw_bytes_per_s,
        arrays["load"], arrays["context_tokens"], arrays["nl_tokens"], arrays["receiver_load"][:, 0],
    )
    np.testing.assert_array_equal(world.true_terms().payload_bits, want.payload_bits)


def test_partial_reset_redraws_only_the_masked_worlds():
    world = pinned_world()
    before = world.observation()
    world.reset(np.random.default_rng(1), np.array([True, False]))
    after = world.observation()
    assert np.array_equal(before["snr_db"][1], after["snr_db"][1])
    assert not np.array_equal(before["snr_db"][0], after["snr_db"][0])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_chunk_rounds_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="chunk_rounds"):
        WorldProcess(make_config(), 1, chunk_rounds=bad)
