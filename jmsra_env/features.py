"""Observation features for the policy network: the raw Dict observation as a flat float32 vector.

The raw observation spans twelve orders of magnitude (FLOP/s next to loads in [0, 0.8]) and mixes
per-agent arrays with a receiver scalar. Two feature sets turn it into a vector an MLP can use
(``VecNormalize`` then standardises each entry):

* ``"log"``: per agent ``snr_db / 10``, ``log10`` of ``compute_flops``, ``mem_bw_bytes_per_s``,
  ``context_tokens`` and ``nl_tokens``, the load; then the receiver load. ``6 N + 1`` entries.
* ``"physics"`` (default): ``"log"`` plus, per agent, ``log10`` of the latency model's terms for the
  observed round (:func:`jmsra_env.model.terms_from_observation`): sender prefill, NL decoding,
  payload and receiver work of both media, the power-limited rate ceiling, and each medium's
  finish time on an equal share ``B / N``; then ``log10`` of the answer time. ``18 N + 2`` entries.

Both are deterministic functions of the observation and the scenario's static config (what every
expert also uses): no information the environment does not show. Every formula is the model's;
this module only takes logarithms. The functions accept one observation (arrays ``(N,)``) or a
batch (``(M, N)``, as a vectorised env returns them).
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import numpy as np

from . import model

__all__ = [
    "FEATURE_SETS",
    "DEFAULT_FEATURES",
    "n_features",
    "feature_names",
    "observation_features",
    "FeatureObservation",
    "VectorFeatureObservation",
]

FEATURE_SETS = ("log", "physics")
DEFAULT_FEATURES = "physics"

# log10 arguments are clipped into this range: a deep fade (SNR -150 dB) gives rates near zero and
# finish times near infinity, which the network only needs to see as "very large".
_LOG_LO, _LOG_HI = 1e-12, 1e15


def _log10(x) -> np.ndarray:
    return np.log10(np.clip(x, _LOG_LO, _LOG_HI))


def n_features(n_agents: int, kind: str = DEFAULT_FEATURES) -> int:
    """Length of the feature vector for ``n_agents`` agents."""
    _check_kind(kind)
    return 6 * n_agents + 1 if kind == "log" else 18 * n_agents + 2


def _check_kind(kind: str) -> None:
    if kind not in FEATURE_SETS:
        raise ValueError(f"features must be one of {FEATURE_SETS}; got {kind!r}")


def observation_features(
    obs: Mapping[str, np.ndarray], consts: model.ModelConstants, kind: str = DEFAULT_FEATURES
) -> np.ndarray:
    """float32 features ``(..., F)`` of a raw observation (one round ``(N,)`` or a batch ``(M, N)``)."""
    _check_kind(kind)
    snr = np.asarray(obs["snr_db"], dtype=np.float64)
    rx_load = np.asarray(obs["receiver_load"], dtype=np.float64)
    per_agent = [
        snr / 10.0,
        _log10(obs["compute_flops"]),
        _log10(obs["mem_bw_bytes_per_s"]),
        np.asarray(obs["load"], dtype=np.float64),
        _log10(obs["context_tokens"]),
        _log10(np.maximum(np.asarray(obs["nl_tokens"], dtype=np.float64), 1.0)),
    ]
    scalars = [rx_load[..., :1]]
    if kind == "physics":
        terms = model.terms_from_observation(consts, obs)
        n = snr.shape[-1]
        equal_rate = model.rate_bps(np.full(snr.shape, consts.bandwidth_hz / n), terms.gain_hz)
        finish = [
            terms.prefill_s
            + terms.extra_compute_s[..., m]
            + model.transmission_time_s(terms.payload_bits[..., m], equal_rate)
            for m in (model.NL, model.KV)
        ]
        per_agent += [
            _log10(terms.prefill_s),
            _log10(terms.extra_compute_s[..., model.NL]),
            _log10(terms.payload_bits[..., model.NL]),
            _log10(terms.payload_bits[..., model.KV]),
            _log10(terms.receiver_s[..., model.NL]),
            _log10(terms.receiver_s[..., model.KV]),
            _log10(model.rate_ceiling_bps(terms.gain_hz)),
            _log10(finish[model.NL]),
            _log10(finish[model.KV]),
            _log10(finish[model.NL] + terms.receiver_s[..., model.NL]),
            _log10(finish[model.KV] + terms.receiver_s[..., model.KV]),
            _log10(equal_rate),
        ]
        scalars.append(_log10(terms.answer_s)[..., None])
    feats = np.concatenate([np.stack(per_agent, axis=-1).reshape(*snr.shape[:-1], -1), *scalars], axis=-1)
    return feats.astype(np.float32)


class FeatureObservation(gym.ObservationWrapper):
    """Replace a JMSRA environment's Dict observation by :func:`observation_features` (a ``Box``).

    ``gym.make(id, features=kind)`` applies it; :class:`VectorFeatureObservation` is its twin on a
    vector env (``gym.make_vec(id, features=kind)``), ``agents.envs.FeatureVecEnv`` on an SB3
    ``VecEnv``.
    """

    def __init__(self, env: gym.Env, kind: str = DEFAULT_FEATURES):
        super().__init__(env)
        _check_kind(kind)
        base = env.unwrapped
        self.kind = kind
        self.consts = model.model_constants(base.config)
        f = n_features(base.config.n_agents, kind)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (f,), dtype=np.float32)

    def observation(self, observation):
        return observation_features(observation, self.consts, self.kind)


class VectorFeatureObservation(gym.vector.VectorObservationWrapper):
    """:class:`FeatureObservation` on a gymnasium vector env of JMSRA environments (batched);
    ``infos["final_obs"]`` (``SameStep`` autoreset) holds features too."""

    @property
    def autoreset_mode(self):
        """The wrapped env's autoreset mode (TorchRL's ``GymWrapper`` reads it)."""
        return self.env.autoreset_mode

    def __init__(self, env: gym.vector.VectorEnv, kind: str = DEFAULT_FEATURES):
        super().__init__(env)
        _check_kind(kind)
        cfg = env.unwrapped.config
        self.kind = kind
        self.consts = model.model_constants(cfg)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (n_features(cfg.n_agents, kind),), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations):
        return observation_features(observations, self.consts, self.kind)

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        final = infos.get("final_obs")
        if final is not None:
            infos["final_obs"] = np.array([None if o is None else self.observations(o) for o in final], dtype=object)
        return self.observations(obs), rewards, terminations, truncations, infos


_LOG_NAMES = ("snr_db/10", "log10 compute_flops", "log10 mem_bw_bytes_per_s", "load", "log10 context_tokens",
              "log10 max(nl_tokens, 1)")
_PHYSICS_NAMES = (
    "log10 prefill_s", "log10 nl_decode_s", "log10 nl_payload_bits", "log10 kv_payload_bits",
    "log10 nl_receiver_s", "log10 kv_receiver_s", "log10 rate_ceiling_bps", "log10 nl_finish_equal_s",
    "log10 kv_finish_equal_s", "log10 nl_finish_plus_receiver_equal_s", "log10 kv_finish_plus_receiver_equal_s",
    "log10 equal_share_rate_bps",
)


def feature_names(n_agents: int, kind: str = DEFAULT_FEATURES) -> list[str]:
    """The name of every entry of the feature vector, in order (``"agent2: load"``, ...)."""
    _check_kind(kind)
    per_agent = _LOG_NAMES + (_PHYSICS_NAMES if kind == "physics" else ())
    names = [f"agent{i}: {f}" for i in range(n_agents) for f in per_agent]
    names.append("receiver_load")
    if kind == "physics":
        names.append("log10 answer_s")
    return names
