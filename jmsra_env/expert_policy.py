"""The expert policy: an expert of :mod:`jmsra_env.solvers` deciding on observations and acting
in an environment's action form and encoding.

:func:`jmsra_env.policies.make_policy` builds one for an environment (reading its scenario, action
form, action encoding and feature wrapper); the session experts
(:class:`jmsra_env.session_experts.SessionExpertPolicy`) extend it. It lies below both: it
imports neither the environment nor the factory.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import actions, encoding, model
from .backend import to_numpy
from .config import ScenarioConfig
from .solvers import Decision, check_name, solve

__all__ = ["ExpertPolicy", "REFERENCE_EXPERTS", "ACTION_FORMS", "POLICY_ENCODINGS", "ENCODING_RTOL"]

ACTION_FORMS = ("dict", "box")
# The action encodings a policy can act in (None and "box": the env's own Box form).
POLICY_ENCODINGS = (None, *encoding.ACTION_ENCODINGS)
# Experts the paper compares (in order of preference as a gap reference); the others are baselines.
REFERENCE_EXPERTS = ("optimal", "jmsra")
# An encoded expert action must be charged the plain env's latency for the decision to this.
ENCODING_RTOL = 1e-6


class ExpertPolicy:
    """An expert (``optimal``, ``jmsra``) or baseline acting on observations of one scenario.

    It is also the evaluation's policy (:class:`jmsra_env.evaluation.Policy`): ``label``, ``kind``
    (``expert``, ``baseline``, or ``bound`` for the oracle), ``decide`` on a batch and
    ``reset(config, seed)``. With ``oracle=True`` it decides on the *true* terms passed as
    ``decide(obs, true_terms=...)`` (perfect, fresh channel knowledge: with ``csi_delay > 0`` a
    bound no policy that sees the observation can reach; otherwise the plain expert).

    ``predict`` returns the decision in the env's action form and, on the Box form, in its
    ``action_encoding`` (``"deadline"`` / ``"solved"``, :mod:`jmsra_env.encoding`): an action that
    the encoded env charges the latency the plain env charges for the decision (to
    :data:`ENCODING_RTOL`, checked on every call: a decision the encoding cannot express, e.g. a
    ``random`` split far from the (P2) optimum under ``"solved"``, is a ``ValueError``, never a
    silently different action). ``feature_source`` (set by ``make_policy`` on an env made with
    ``features=``) maps the feature vectors ``predict`` is given back to the raw observation the
    expert decides on.
    """

    def __init__(
        self,
        name: str,
        config: ScenarioConfig,
        action_form: str = "dict",
        seed: int | None = None,
        *,
        oracle: bool = False,
        action_encoding: str | None = None,
    ):
        self.name = check_name(name)
        if action_form not in ACTION_FORMS:
            raise ValueError(f"action_form must be one of {ACTION_FORMS}; got {action_form!r}")
        if action_encoding not in POLICY_ENCODINGS:
            raise ValueError(f"action_encoding must be one of {POLICY_ENCODINGS}; got {action_encoding!r}")
        if action_encoding not in (None, "box") and action_form != "box":
            raise ValueError(
                f"action_encoding={action_encoding!r} applies to the Box action form; got action_form={action_form!r}"
            )
        self.action_encoding = None if action_encoding == "box" else action_encoding
        self.feature_source: Any = None
        self.config = config
        self.action_form = action_form
        self.oracle = bool(oracle)
        self.consts = model.model_constants(config)
        self.rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"ExpertPolicy({self.name!r}, n_agents={self.config.n_agents}, action_form={self.action_form!r})"

    @property
    def label(self) -> str:
        return "oracle" if self.oracle else self.name

    @property
    def kind(self) -> str:
        if self.oracle:
            return "bound"
        return "expert" if self.name in REFERENCE_EXPERTS else "baseline"

    def reset(self, config: ScenarioConfig | None = None, seed: int | None = None) -> None:
        """Before an evaluation: decide for ``config`` from now on, and reseed the ``random``
        policy from ``(seed, label)`` (its draws do not depend on which other policies run)."""
        if config is not None and config != self.config:
            self.config = config
            self.consts = model.model_constants(config)
        if seed is not None:
            self.rng = np.random.default_rng([seed, zlib.crc32(self.label.encode())])

    def decide(self, obs: Mapping[str, Any], true_terms: model.RoundTerms | None = None) -> Decision:
        """The expert's decision on an observation (``(N,)`` arrays) or a batch (``(M, N)``)."""
        terms = self.observed_terms(obs)
        if self.oracle:
            if true_terms is None:
                raise ValueError(f"the oracle {self.name!r} decides on the true terms: pass true_terms=")
            return solve(self.name, true_terms, rng=self.rng)
        return solve(self.name, terms, rng=self.rng)

    def observed_terms(self, obs: Mapping[str, Any]) -> model.RoundTerms:
        """The model terms an observation (or a batch) shows; ``ValueError`` for a malformed one."""
        if not isinstance(obs, Mapping) or "snr_db" not in obs:
            raise ValueError(
                "obs must be the environment's Dict observation (a mapping with 'snr_db', 'load', ...); "
                f"got {type(obs).__name__}"
            )
        n = np.shape(obs["snr_db"])[-1] if np.ndim(obs["snr_db"]) else 0
        if np.ndim(obs["snr_db"]) not in (1, 2) or n != self.config.n_agents:
            raise ValueError(
                f"obs['snr_db'] must have shape (N,) or (M, N) with N = {self.config.n_agents}; "
                f"got {np.shape(obs['snr_db'])}"
            )
        return model.terms_from_observation(self.consts, obs)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """SB3-style: ``(action, None)``; ``state``, ``episode_start`` and ``deterministic`` are
        accepted and ignored (the experts are stateless; ``random`` is random either way)."""
        raw = self.raw_observation(obs)
        return self.act(self.decide(raw), raw), None

    __call__ = predict

    def raw_observation(self, obs) -> Mapping[str, Any]:
        """The raw Dict observation behind ``obs`` (as NumPy arrays): ``obs`` itself, or for a
        feature vector the observation the env's feature wrapper turned into it
        (``feature_source``)."""
        if isinstance(obs, Mapping):
            return {k: to_numpy(v) for k, v in obs.items()}  # torch tensors (the torch backend): NumPy
        if self.feature_source is None:
            raise ValueError(
                "obs must be the environment's Dict observation; for an env made with features=, build the "
                f"policy with make_policy(name, env) so that it reads the raw observation (got {type(obs).__name__})"
            )
        return self.feature_source.raw_observation_of(obs)

    def act(self, decision: Decision, obs: Mapping[str, Any]):
        """``decision`` as an action of the env's form and encoding, on the observation ``obs``
        (raw) it was made on; ``ValueError`` where the encoding cannot express it."""
        if self.action_form == "dict":
            return actions.encode_dict(decision.media, decision.bandwidth_hz)
        terms = self.observed_terms(obs)
        if self.action_encoding is None:  # the env decodes on the round the observation shows
            return actions.encode_box(decision.media, decision.bandwidth_hz, terms)
        action = encoding.express_decision(self.action_encoding, decision.media, decision.bandwidth_hz, terms)
        self._check_expressed(decision, action, obs, terms)
        return action

    def _check_expressed(self, decision: Decision, action, obs, terms: model.RoundTerms) -> None:
        box = actions.encode_box(decision.media, decision.bandwidth_hz, terms)  # the plain env's action
        plain = model.latency(terms, *actions.decode_box(box, terms))
        env_action = encoding.to_env_action(self.action_encoding, action, obs, self.consts)
        got = model.latency(terms, *actions.decode_box(env_action, terms))
        bad = np.abs(got.latency_s - plain.latency_s) > ENCODING_RTOL * np.abs(plain.latency_s)
        if self.config.csi_delay > 0:
            # the env charges the true channel: the same split, not only the same observed latency
            tx = (plain.transmission_s > 0.0) & np.isfinite(plain.finish_s)
            off = np.abs(got.finish_s - plain.finish_s) > ENCODING_RTOL * np.abs(plain.finish_s)
            bad = bad | np.any(tx & off, axis=-1)
        if np.any(bad):
            rows = np.flatnonzero(np.reshape(bad, -1)).tolist()
            raise ValueError(
                f"action_encoding={self.action_encoding!r} cannot express the decision of expert {self.label!r} "
                f"on round(s) {rows[:8]} of the batch (charged {np.reshape(got.latency_s, -1)[rows[0]]:.6g} s "
                f"instead of {np.reshape(plain.latency_s, -1)[rows[0]]:.6g} s); use action_encoding='box' "
                "(the env's own Box form expresses every decision)"
            )
