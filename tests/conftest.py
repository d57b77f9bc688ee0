"""Shared fixtures: a seeded default environment and helpers to build actions."""

import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)


@pytest.fixture
def equal_nl_action():
    def make(n):
        return {"media": np.zeros(n, dtype=np.int8), "bandwidth": np.ones(n, dtype=np.float32)}

    return make
