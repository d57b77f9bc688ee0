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

Safety: a dataset ID is checked (:func:`check_dataset_id`) before anything touches the disk, and
can never name a path outside the root. Collection is atomic: the episodes are played in memory,
written under a temporary folder of the root (``.jmsra_collect.<pid>.*``) and renamed to the ID
only when complete, so a killed collection never leaves a dataset (let alone an empty one) at its
ID; temporary folders of killed collections are removed by the next collection in the root.
Each episode records the seed that replays it (Minari's episode metadata, :func:`episode_seeds`):
``env = dataset.recover_environment(); env.reset(seed=episode_seeds(dataset)[i])`` replays episode
``i`` with the recorded actions.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from .registration import env_id as make_env_id
from .registration import variant_of

__all__ = ["collect_dataset", "load_dataset", "dataset_root", "check_dataset_id", "episode_seeds", "INFO_KEYS",
           "MAX_EPISODES"]

MAX_EPISODES = 1_000_000  # episodes of one dataset (they are played in memory before writing)
MAX_SEED = 2**63 - 1
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_-]*"  # no dots: never "." or ".."
_DATASET_ID = re.compile(rf"(?:{_SEGMENT}/)*(?P<name>{_SEGMENT}?)-v(?P<version>\d{{1,6}})")
_TMP_PREFIX = ".jmsra_collect."

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


def check_dataset_id(dataset_id: Any) -> str:
    """``dataset_id`` if it is ``[namespace/...]name-v<version>`` with plain segments (letters,
    digits, ``_``, ``-``; no dots, no absolute or ``..`` paths, at most 200 characters); a
    ``ValueError`` naming it otherwise. Pure string check: nothing touches the disk."""
    if not isinstance(dataset_id, str):
        raise ValueError(f"dataset_id must be a string like 'jmsra_env/JMSRA-Box/jmsra-v0'; got "
                         f"{type(dataset_id).__name__}")
    if len(dataset_id) > 200 or _DATASET_ID.fullmatch(dataset_id) is None:
        raise ValueError(
            f"dataset_id {dataset_id[:80]!r} is malformed: it must be [namespace/...]name-v<version> with "
            f"segments of letters, digits, '_' and '-' (no '.', no leading '/', no '..'), at most 200 "
            f"characters, e.g. 'jmsra_env/JMSRA-Box/jmsra-v0'"
        )
    return dataset_id


def _root_path(root: str | os.PathLike | None) -> Path:
    """The datasets' root folder (not created): ``root``, ``$MINARI_DATASETS_PATH`` or Minari's default."""
    if root is not None:
        return Path(os.path.abspath(os.fspath(root)))
    env = os.environ.get("MINARI_DATASETS_PATH")
    if env is not None:
        return Path(os.path.abspath(env))
    return Path(os.path.expanduser("~")) / ".minari" / "datasets"


def _inside(root: Path, dataset_id: str) -> Path:
    path = Path(os.path.normpath(root / dataset_id))
    if os.path.commonpath([root, path]) != str(root) or path == root:
        raise ValueError(f"dataset_id {dataset_id!r} names a path outside the dataset root {root}")
    return path


def _count(name: str, value: Any, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= int(value) <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum:,}, {maximum:,}] (not a bool); got {value!r:.60}")
    return int(value)


def _clean_stale(root: Path) -> None:
    """Remove the temporary folders of collections whose process is gone."""
    if not root.is_dir():
        return
    for p in root.glob(f"{_TMP_PREFIX}*"):
        pid = p.name[len(_TMP_PREFIX):].split(".", 1)[0]
        if not pid.isdigit() or not p.is_dir() or p.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (PermissionError, OverflowError, ValueError):
            pass


def episode_seeds(dataset) -> list[int]:
    """The reset seed of every episode of a dataset (Minari's per-episode metadata), in episode
    order: ``env.reset(seed=episode_seeds(ds)[i])`` + the recorded actions replay episode ``i``."""
    ids = list(dataset.episode_indices)
    meta = list(dataset.storage.get_episode_metadata(ids))
    seeds = [m.get("seed") for m in meta]
    if any(s is None for s in seeds):
        raise ValueError("this dataset does not record its episodes' seeds (written by another tool?)")
    return [int(s) for s in seeds]


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
    # Everything checked before anything is played or touches the disk.
    n_episodes = _count("n_episodes", n_episodes, 1, MAX_EPISODES)
    seed = _count("seed", seed, 0, MAX_SEED - n_episodes)
    variant, _ = variant_of(env_id)
    box_id = make_env_id(variant, "box")
    if dataset_id is not None:
        check_dataset_id(dataset_id)
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping of config keys; got {type(config).__name__}")
    root_path = _root_path(root)
    if dataset_id is not None:
        final = _inside(root_path, dataset_id)
        if final.exists():
            raise ValueError(f"dataset {dataset_id!r} already exists in {root_path} (Minari never overwrites)")
    env = gym.make(box_id, config=dict(config or {}))
    name, predict = _policy(policy, env, seed)
    dataset_id = check_dataset_id(dataset_id or f"jmsra_env/{variant}-Box/{name}-v0")
    final = _inside(root_path, dataset_id)
    if final.exists():
        raise ValueError(f"dataset {dataset_id!r} already exists in {root_path} (Minari never overwrites)")
    buffers = [_episode(env, predict, seed + e, e) for e in range(n_episodes)]  # in memory
    root_path.mkdir(parents=True, exist_ok=True)
    _clean_stale(root_path)
    tmp_root = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}.", dir=root_path))
    try:
        with dataset_root(tmp_root):  # written whole under a temporary root ...
            minari.create_dataset_from_buffers(
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
        with dataset_root(root_path):  # ... then published at its ID with one rename
            namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
            if namespace is not None:
                from minari.namespace import create_namespace, list_local_namespaces

                if namespace not in list_local_namespaces():
                    with contextlib.suppress(ValueError):  # created meanwhile by another process
                        create_namespace(namespace)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(final)  # claims the ID: fails if another collection published it meanwhile
            except FileExistsError:
                raise ValueError(f"dataset {dataset_id!r} already exists in {root_path} (Minari never overwrites)") from None
            os.replace(tmp_root / dataset_id, final)  # replaces the empty folder just made
            return minari.load_dataset(dataset_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def load_dataset(dataset_id: str, root: str | os.PathLike | None = None):
    """``minari.load_dataset(dataset_id)`` under ``root`` (see :func:`dataset_root`); the ID is
    checked first (:func:`check_dataset_id`), and a dataset without episodes is a ``ValueError``."""
    minari = _minari()
    check_dataset_id(dataset_id)
    root_path = _root_path(root)
    path = _inside(root_path, dataset_id)
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset {dataset_id!r} in {root_path}")
    with dataset_root(root):
        ds = minari.load_dataset(dataset_id)
    if ds.total_episodes < 1:
        raise ValueError(f"dataset {dataset_id!r} in {root_path} holds no episodes (a collection interrupted "
                         f"by an older version?); delete {path} and collect it again")
    return ds
