"""Observation features for the policy network: moved to :mod:`jmsra_env.features` (no torch or
SB3 needed); re-exported here so that training code and RL Zoo configs naming
``jmsra_agents.features.FeatureObservation`` keep working."""

from jmsra_env import features as _features
from jmsra_env.features import *  # noqa: F401,F403 - the re-export is the point

__all__ = list(_features.__all__)
