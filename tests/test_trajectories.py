"""Every registered ID behaves bit for bit as the release before the functional core.

``tests/data/trajectories.json`` holds SHA-256 fingerprints of every ID's observations, rewards and
flags (single env and vector env, seeded random actions, the Box IDs also with the options),
recorded with ``tests/trajectory_fingerprints.py`` on the release before the core. Bit identity is
a property of the floating-point kernels too: on a machine whose NumPy log/exp kernels give other
last bits than the recording machine's (``platform_probe``), the recorded fingerprints cannot be
matched, and the test asserts what still holds there: the same seed and actions give the same
fingerprint twice, and different seeds different ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trajectory_fingerprints import cases, fingerprint, platform_probe

RECORDED = json.loads((Path(__file__).parent / "data" / "trajectories.json").read_text())
SAME_KERNELS = platform_probe() == RECORDED["platform"]
CASES = dict(cases())


def test_every_id_and_option_is_recorded():
    assert set(CASES) == set(RECORDED["fingerprints"])


@pytest.mark.parametrize("key", sorted(CASES))
def test_trajectory_is_bit_identical_to_the_recorded_release(key):
    id_, vector, seed, options = CASES[key]
    got = fingerprint(id_, vector, seed, **options)
    if SAME_KERNELS:
        assert got == RECORDED["fingerprints"][key]
    else:  # another machine's kernels: reproducible per seed, seeds differ
        assert got == fingerprint(id_, vector, seed, **options)
        assert got != fingerprint(id_, vector, seed + 1, **options)
