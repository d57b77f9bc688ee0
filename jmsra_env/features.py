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

On a session scenario (``config.session.enabled``, docs/sessions.md) the terms above are
already the session round's (prefill of the new tokens, the NL summary of the unseen tokens, the
KV delta); :func:`session_features` then appends the receiver's state, which decides the later
rounds: per agent ``log10(1 + x)`` of ``new_tokens``, ``unseen_tokens`` and
``kv_resident_tokens``, ``rounds_since_kv`` (divided by ``never`` when given) and the share of the
pool the agent's whole cache would take; then the pool's used fraction and ``log10`` of its size.
``5 N + 2`` more entries. The single-round layout is unchanged.

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
from .backend import namespace

__all__ = [
    "FEATURE_SETS",
    "DEFAULT_FEATURES",
    "n_features",
    "feature_names",
    "observation_features",
    "session_features",
    "is_session_observation",
    "RawObservationMemory",
    "FeatureObservation",
    "VectorFeatureObservation",
]

FEATURE_SETS = ("log", "physics")
DEFAULT_FEATURES = "physics"

# log10 arguments are clipped into this range: a deep fade (SNR -150 dB) gives rates near zero and
# finish times near infinity, which the network only needs to see as "very large".
_LOG_LO, _LOG_HI = 1e-12, 1e15


def _log10(x) -> np.ndarray:
    xp = namespace(x)
    if xp.is_torch:
        return xp.log10(xp.clip(x, _LOG_LO, _LOG_HI))
    return np.log10(np.minimum(np.maximum(x, _LOG_LO), _LOG_HI))  # np.clip's values, two ufunc calls


def n_features(n_agents: int, kind: str = DEFAULT_FEATURES, session: bool = False) -> int:
    """Length of the feature vector for ``n_agents`` agents (``session``: with the session block)."""
    _check_kind(kind)
    base = 6 * n_agents + 1 if kind == "log" else 18 * n_agents + 2
    return base + (_SESSION_AGENT_FEATURES * n_agents + _SESSION_SCALARS if session else 0)


_SESSION_AGENT_FEATURES, _SESSION_SCALARS = 5, 2


def is_session_observation(obs: Mapping[str, np.ndarray]) -> bool:
    """Whether ``obs`` has the keys of a session environment's observation (``kv_resident_tokens``).
    Not how the package decides whether a scenario is a session: ``config.session.enabled`` (and
    ``model.ModelConstants.session``) say so."""
    return "kv_resident_tokens" in obs


def session_features(obs: Mapping[str, np.ndarray], consts: model.ModelConstants, never: int | None = None) -> np.ndarray:
    """float32 features ``(..., 5 k + 2)`` of a session observation's receiver state (``k`` agents,
    per-agent block first, as :func:`observation_features`): per agent ``log10(1 + x)`` of
    ``new_tokens``, ``unseen_tokens`` and ``kv_resident_tokens``, ``rounds_since_kv`` (divided by
    ``never``, :func:`jmsra_env.session.never_rounds`, when given) and the share of the pool the
    agent's whole cache would take (``context_tokens x kappa / 8 / kv_pool_bytes``); then the pool's
    used fraction and ``log10`` of its size. The physics features already hold the session's terms
    (prefill of the new tokens, the KV delta); these add what decides later rounds: what is
    resident, how old, how full the pool."""
    xp = namespace(obs["kv_pool_bytes"], obs["context_tokens"])
    pool = xp.as_float(obs["kv_pool_bytes"])
    ctx = xp.as_float(obs["context_tokens"])
    since = xp.as_float(obs["rounds_since_kv"])
    per_agent = [
        xp.log10(1.0 + xp.as_float(obs["new_tokens"])),
        xp.log10(1.0 + xp.as_float(obs["unseen_tokens"])),
        xp.log10(1.0 + xp.as_float(obs["kv_resident_tokens"])),
        since / never if never else since,
        ctx * (consts.kv_bits_per_token / 8.0) / pool,
    ]
    scalars = [xp.as_float(obs["kv_pool_used_fraction"])[..., :1], xp.log10(pool[..., :1])]
    feats = xp.concatenate([xp.stack(per_agent, axis=-1).reshape(*ctx.shape[:-1], -1), *scalars], axis=-1)
    return xp.astype(feats, xp.float32)


def _check_kind(kind: str) -> None:
    if kind not in FEATURE_SETS:
        raise ValueError(f"features must be one of {FEATURE_SETS}; got {kind!r}")


def observation_features(
    obs: Mapping[str, np.ndarray], consts: model.ModelConstants, kind: str = DEFAULT_FEATURES,
    session: bool | None = None, terms: model.RoundTerms | None = None,
) -> np.ndarray:
    """float32 features ``(..., F)`` of a raw observation (one round ``(N,)`` or a batch ``(M, N)``).

    ``session`` appends :func:`session_features`; ``None`` (the default): the scenario's, as its
    constants say (``consts.session``, from ``config.session.enabled``).
    """
    _check_kind(kind)
    xp = namespace(obs["snr_db"])
    snr = xp.as_float(obs["snr_db"])
    rx_load = xp.as_float(obs["receiver_load"])
    per_agent = [
        snr / 10.0,
        _log10(obs["compute_flops"]),
        _log10(obs["mem_bw_bytes_per_s"]),
        xp.as_float(obs["load"]),
        _log10(obs["context_tokens"]),
        _log10(xp.maximum(xp.as_float(obs["nl_tokens"]), 1.0)),
    ]
    scalars = [rx_load[..., :1]]
    if kind == "physics":
        if terms is None:  # the observation's terms, unless the caller has them
            terms = model.terms_from_observation(consts, obs)
        n = snr.shape[-1]
        equal_rate = model.rate_bps(xp.full(snr.shape, consts.bandwidth_hz / n), terms.gain_hz)
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
    feats = xp.concatenate([xp.stack(per_agent, axis=-1).reshape(*snr.shape[:-1], -1), *scalars], axis=-1)
    if consts.session if session is None else session:
        feats = xp.concatenate([feats, session_features(obs, consts)], axis=-1)
    return xp.astype(feats, xp.float32)


class RawObservationMemory:
    """What the feature wrappers share: they remember the last raw observation they turned into
    features, so that an expert handed the features decides on the raw observation
    (:meth:`raw_observation_of`; :func:`jmsra_env.policies.make_policy` finds the layer by its
    class attribute ``jmsra_view = "features"``)."""

    jmsra_view = "features"
    _last_raw: Mapping[str, np.ndarray] | None = None
    _last_features: np.ndarray | None = None

    def _remember(self, raw, feats: np.ndarray) -> np.ndarray:
        self._last_raw, self._last_features = raw, feats
        return feats

    def raw_observation_of(self, features) -> Mapping[str, np.ndarray]:
        """The raw observation behind ``features``, which must be the last features returned."""
        last = self._last_features
        if last is None or not (features is last or np.array_equal(np.asarray(features), last)):
            raise ValueError(
                "obs is not the last feature observation this env returned (an expert decides on the raw "
                "observation behind it): pass the env's latest observation, unnormalised (SB3's VecNormalize: "
                "get_original_obs())"
            )
        return self._last_raw


class FeatureObservation(RawObservationMemory, gym.ObservationWrapper):
    """Replace a JMSRA environment's Dict observation by :func:`observation_features` (a ``Box``).

    ``gym.make(id, features=kind)`` applies it; :class:`VectorFeatureObservation` is its twin on a
    vector env (``gym.make_vec(id, features=kind)``), ``jmsra_agents.envs.FeatureVecEnv`` on an SB3
    ``VecEnv``. The session block (:func:`session_features`) is appended on a session scenario
    (``config.session.enabled``).
    """

    def __init__(self, env: gym.Env, kind: str = DEFAULT_FEATURES):
        gym.ObservationWrapper.__init__(self, env)
        _check_kind(kind)
        cfg = env.unwrapped.config
        self.kind = kind
        self.session = bool(cfg.session.enabled)
        self.consts = model.model_constants(cfg)
        f = n_features(cfg.n_agents, kind, session=self.session)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (f,), dtype=np.float32)

    def observation(self, observation):
        terms = self.env.unwrapped.observed_terms() if self.kind == "physics" else None  # the env's own
        return self._remember(observation, observation_features(observation, self.consts, self.kind, self.session, terms))


class VectorFeatureObservation(RawObservationMemory, gym.vector.VectorObservationWrapper):
    """:class:`FeatureObservation` on a gymnasium vector env of JMSRA environments (batched);
    ``infos["final_obs"]`` (``SameStep`` autoreset) holds features too."""

    @property
    def autoreset_mode(self):
        """The wrapped env's autoreset mode (TorchRL's ``GymWrapper`` reads it)."""
        return self.env.autoreset_mode

    def __init__(self, env: gym.vector.VectorEnv, kind: str = DEFAULT_FEATURES):
        gym.vector.VectorObservationWrapper.__init__(self, env)
        _check_kind(kind)
        cfg = env.unwrapped.config
        self.kind = kind
        self.session = bool(cfg.session.enabled)
        self.consts = model.model_constants(cfg)
        f = n_features(cfg.n_agents, kind, session=self.session)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (f,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def _features(self, observations, terms=None):
        return observation_features(observations, self.consts, self.kind, self.session, terms)

    def observations(self, observations):
        # the current round's: the env's own terms of it (what terms_from_observation rebuilds)
        terms = self.env.unwrapped.observed_terms() if self.kind == "physics" else None
        return self._remember(observations, self._features(observations, terms))

    def step(self, actions):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        final = infos.get("final_obs")
        if final is not None:
            infos["final_obs"] = np.array([None if o is None else self._features(o) for o in final], dtype=object)
        return self.observations(obs), rewards, terminations, truncations, infos


_LOG_NAMES = ("snr_db/10", "log10 compute_flops", "log10 mem_bw_bytes_per_s", "load", "log10 context_tokens",
              "log10 max(nl_tokens, 1)")
_PHYSICS_NAMES = (
    "log10 prefill_s", "log10 nl_decode_s", "log10 nl_payload_bits", "log10 kv_payload_bits",
    "log10 nl_receiver_s", "log10 kv_receiver_s", "log10 rate_ceiling_bps", "log10 nl_finish_equal_s",
    "log10 kv_finish_equal_s", "log10 nl_finish_plus_receiver_equal_s", "log10 kv_finish_plus_receiver_equal_s",
    "log10 equal_share_rate_bps",
)


_SESSION_NAMES = ("log10(1 + new_tokens)", "log10(1 + unseen_tokens)", "log10(1 + kv_resident_tokens)",
                  "rounds_since_kv", "kv_cache_share_of_pool")


def feature_names(n_agents: int, kind: str = DEFAULT_FEATURES, session: bool = False) -> list[str]:
    """The name of every entry of the feature vector, in order (``"agent2: load"``, ...)."""
    _check_kind(kind)
    per_agent = _LOG_NAMES + (_PHYSICS_NAMES if kind == "physics" else ())
    names = [f"agent{i}: {f}" for i in range(n_agents) for f in per_agent]
    names.append("receiver_load")
    if kind == "physics":
        names.append("log10 answer_s")
    if session:
        names += [f"agent{i}: {f}" for i in range(n_agents) for f in _SESSION_NAMES]
        names += ["kv_pool_used_fraction", "log10 kv_pool_bytes"]
    return names
