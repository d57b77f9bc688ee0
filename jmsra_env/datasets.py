"""Expert (and trained-policy) episodes as Minari datasets, for offline RL and imitation.

Requires the ``[datasets]`` extra (``minari``, with its Arrow storage). One dataset holds
``n_episodes`` episodes of a Box-action ID (a Dict ID is recorded on its ``-Box`` twin) played by
an expert of :mod:`jmsra_env.solvers` (by name) or by any ``predict(obs) -> action`` callable
(a trained policy, an SB3 model's ``predict``)::

    from jmsra_env.datasets import collect_dataset, load_dataset
    ds = collect_dataset("jmsra", "jmsra_env/JMSRA-Box-v1", n_episodes=100, root="data/minari")
    ds = load_dataset("jmsra_env/JMSRA-Box/jmsra-v0", root="data/minari")
    for episode in ds.iterate_episodes():
        episode.observations["snr_db"]   # (65, N): the reset observation, then one per round
        episode.actions                  # (64, 2N) float32: the Box actions
        episode.infos["action_float64"]  # (65, 2N): the exact decisions (row 0: the reset row)

Layout (Minari's convention: observations and infos have one row more than actions, row 0
belongs to the reset, step ``t`` is row ``t + 1``): observations are the raw Dict observation
(float64); actions the Box action in float32 (the space's dtype, what an offline learner reads);
``infos`` hold, per step, ``action_float64`` (the float64 action the env was stepped with, so the
rewards are the policy's exact latencies; its float32 cast keeps the latency within 1e-6),
``media``, ``bandwidth_hz`` (the decision charged), ``latency_s`` and ``capped``; and ``round``
(row 0 included); per-round scalars have shape ``(T + 1, 1)`` (Minari 0.5's Arrow storage does
not read back 1-D info arrays). Episode ``e`` is reset with ``seed + e``.

The datasets live under ``root`` (an argument) or else ``$MINARI_DATASETS_PATH``, or else
Minari's default ``~/.minari/datasets``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from .registration import env_id as make_env_id
from .registration import variant_of

__all__ = ["collect_dataset", "load_dataset", "dataset_root", "INFO_KEYS"]

# Per-step info entries a dataset keeps (besides "round", which the reset row has too).
INFO_KEYS = ("action_float64", "media", "bandwidth_hz", "latency_s", "capped")


def _minari():
    try:
        import minari
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("jmsra_env.datasets needs minari: pip install 'jmsra_env[datasets]'") from exc
    return minari


@contextlib.contextmanager
def dataset_root(root: str | os.PathLike | None) -> Iterator[None]:
    """Point Minari at ``root`` (``MINARI_DATASETS_PATH``) for the duration; ``None``: as is."""
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.path.abspath(os.fspath(root))  # Minari mis-joins relative roots
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _policy(policy, env: gym.Env, seed: int) -> tuple[str, Callable[[Any], np.ndarray]]:
    """``(name, predict)`` for an expert name or a callable."""
    if isinstance(policy, str):
        from .policies import make_policy

        expert = make_policy(policy, env, seed=seed)
        return policy, lambda obs: expert.predict(obs)[0]
    if not callable(policy):
        raise ValueError(f"policy must be an expert name or a callable predict(obs) -> action; got {policy!r}")
    name = getattr(policy, "__name__", None) or type(policy).__name__

    def predict(obs):
        out = policy(obs)
        return out[0] if isinstance(out, tuple) else out

    return name.replace("_", "-").lower(), predict


def _episode(env: gym.Env, predict, seed: int, episode_id: int):
    from minari.data_collector import EpisodeBuffer

    obs, info = env.reset(seed=seed)
    observations = [obs]
    acts32, rewards, terms, truncs = [], [], [], []
    infos: dict[str, list] = {"round": [info["round"]], **{k: [] for k in INFO_KEYS}}
    n = env.action_space.shape[0]
    done = False
    while not done:
        action = np.asarray(predict(obs), dtype=np.float64).reshape(n)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        acts32.append(action.astype(np.float32))
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        infos["round"].append(info["round"])
        infos["action_float64"].append(action)
        for k in INFO_KEYS[1:]:
            infos[k].append(info[k])
        done = terminated or truncated
    reset_row = {  # row 0 belongs to the reset: no decision yet
        "action_float64": np.zeros(n),
        "media": np.zeros_like(infos["media"][0]),
        "bandwidth_hz": np.zeros(n // 2),
        "latency_s": 0.0,
        "capped": False,
    }
    packed = {"round": np.asarray(infos["round"], dtype=np.int64)}
    for k in INFO_KEYS:
        packed[k] = np.asarray([reset_row[k], *infos[k]])
    # Minari 0.5's Arrow storage cannot read back 1-D info arrays: scalars are stored as (T + 1, 1).
    packed = {k: v.reshape(len(v), -1) for k, v in packed.items()}
    return EpisodeBuffer(
        id=episode_id,
        seed=seed,
        observations={k: np.stack([o[k] for o in observations]) for k in observations[0]},
        actions=np.stack(acts32),
        rewards=rewards,
        terminations=terms,
        truncations=truncs,
        infos=packed,
    )


def collect_dataset(
    policy: str | Callable[[Any], Any],
    env_id: str = "jmsra_env/JMSRA-Box-v1",
    n_episodes: int = 10,
    *,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    dataset_id: str | None = None,
    root: str | os.PathLike | None = None,
    description: str | None = None,
    author: str | None = None,
    author_email: str | None = None,
):
    """Play ``n_episodes`` episodes of ``env_id`` with ``policy`` and write them as a Minari dataset.

    ``policy``: an expert name (:data:`jmsra_env.solvers.EXPERT_NAMES`) or ``predict(raw Dict
    observation) -> Box action`` (a tuple's first element is taken, as SB3's ``predict`` returns).
    ``dataset_id`` defaults to ``jmsra_env/<variant>-Box/<policy>-v0``; an existing one is a
    ``ValueError`` (Minari never overwrites). Returns the ``minari.MinariDataset``.
    """
    minari = _minari()
    variant, _ = variant_of(env_id)
    box_id = make_env_id(variant, "box")
    if not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes must be an integer >= 1; got {n_episodes!r}")
    env = gym.make(box_id, config=dict(config or {}))
    name, predict = _policy(policy, env, seed)
    buffers = [_episode(env, predict, seed + e, e) for e in range(n_episodes)]
    dataset_id = dataset_id or f"jmsra_env/{variant}-Box/{name}-v0"
    with dataset_root(root):
        return minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env,
            eval_env=env.spec,
            algorithm_name=name,
            author=author,
            author_email=author_email,
            description=description
            or f"{n_episodes} episodes of {box_id} played by {name} (seeds {seed}..{seed + n_episodes - 1})",
            requirements=["jmsra_env"],
            data_format="arrow",
        )


def load_dataset(dataset_id: str, root: str | os.PathLike | None = None):
    """``minari.load_dataset(dataset_id)`` under ``root`` (see :func:`dataset_root`)."""
    minari = _minari()
    with dataset_root(root):
        return minari.load_dataset(dataset_id)
