"""Fingerprints of every registered ID's trajectories (used by tests/test_trajectories.py).

For each ID, single env and vector env (M = 3), two seeds, 70 seeded random actions (past an
episode's end, so a reset is included): SHA-256 of the observations, rewards and flags; the Box
IDs also with the options (``features=``, ``action_encoding=``). Run as a script it prints them as
JSON (how tests/data/trajectories.json was recorded, on the release before the functional core).
"""

from __future__ import annotations

import hashlib
import json

import gymnasium as gym
import numpy as np

import jmsra_env  # noqa: F401  (registers the IDs)
from jmsra_env.registration import ENV_IDS, SESSION_ENV_IDS

STEPS = 70
OPTIONS = ({"features": "physics", "action_encoding": "deadline"}, {"features": "log"}, {"action_encoding": "deadline"})


def _action(space, rng, box: bool):
    if box:
        return rng.uniform(-1, 1, space.shape).astype(np.float32)
    shape = space["media"].shape
    return {"media": rng.integers(0, 2, shape).astype(np.int8), "bandwidth": rng.random(shape).astype(np.float32)}


def _update(h, obs, reward, flags) -> None:
    if isinstance(obs, dict):
        for k in sorted(obs):
            h.update(np.ascontiguousarray(obs[k]).tobytes())
    else:
        h.update(np.ascontiguousarray(obs).tobytes())
    h.update(np.asarray(reward, dtype=np.float64).tobytes())
    for f in flags:
        h.update(np.asarray(f, dtype=bool).tobytes())


def fingerprint(id_: str, vector: bool, seed: int, **options) -> str:
    box = "-Box-" in id_
    rng = np.random.default_rng(seed + 100)
    h = hashlib.sha256()
    if vector:
        env = gym.make_vec(id_, num_envs=3, vectorization_mode="vector_entry_point", **options)
    else:
        env = gym.make(id_, **options)
    env.reset(seed=seed)
    for _ in range(STEPS):
        obs, reward, terminated, truncated, _ = env.step(_action(env.action_space, rng, box))
        _update(h, obs, reward, (terminated, truncated))
        if not vector and (terminated or truncated):
            env.reset()
    env.close()
    return h.hexdigest()


def cases():
    for id_ in ENV_IDS + SESSION_ENV_IDS:
        for vector in (False, True):
            for seed in (0, 7):
                yield f"{id_}|{'vector' if vector else 'single'}|{seed}", (id_, vector, seed, {})
        if "-Box-" in id_ and id_ in ENV_IDS:
            for options in OPTIONS:
                for vector in (False, True):
                    key = f"{id_}|{'vector' if vector else 'single'}|1|{json.dumps(options, sort_keys=True)}"
                    yield key, (id_, vector, 1, options)


def platform_probe() -> str:
    """A fingerprint of this machine's NumPy transcendental kernels (log, exp, log1p, expm1, log10,
    power) on fixed inputs: where it differs from the recording machine's, float64 results may
    differ in the last bit for reasons that have nothing to do with the environment."""
    x = np.linspace(1e-3, 50.0, 997)
    h = hashlib.sha256()
    for f in (np.log, np.exp, np.log1p, np.expm1, np.log10, np.sqrt):
        h.update(f(x).tobytes())
    h.update(np.power(10.0, x / 7.0).tobytes())
    h.update(np.random.default_rng(0).standard_normal(64).tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    out = {"platform": platform_probe(), "numpy": np.__version__,
           "fingerprints": {k: fingerprint(i, v, s, **o) for k, (i, v, s, o) in cases()}}
    print(json.dumps(out, indent=1, sort_keys=True))
