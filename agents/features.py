"""Observation features for the policy network: moved to :mod:`jmsra_env.features` (no torch or
SB3 needed); re-exported here so that training code and RL Zoo configs naming
``agents.features.FeatureObservation`` keep working."""

from jmsra_env.features import (  # noqa: F401
    DEFAULT_FEATURES,
    FEATURE_SETS,
    FeatureObservation,
    VectorFeatureObservation,
    feature_names,
    n_features,
    is_session_observation,
    observation_features,
    session_features,
)

__all__ = [
    "FEATURE_SETS",
    "DEFAULT_FEATURES",
    "n_features",
    "feature_names",
    "observation_features",
    "session_features",
    "is_session_observation",
    "FeatureObservation",
    "VectorFeatureObservation",
]
