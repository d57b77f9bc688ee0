"""Shared fixtures: a seeded default environment and helpers to build actions."""

import numpy as np
import pytest

import jmsra_env  # noqa: F401  (registers the environments)


@pytest.fixture
def equal_nl_action():
    def make(n):
        return {"media": np.zeros(n, dtype=np.int8), "bandwidth": np.ones(n, dtype=np.float32)}

    return make


@pytest.fixture
def interrupt_second_torch_update(monkeypatch):
    """The torch backend's trainers raise KeyboardInterrupt (Ctrl-C) in their second update; the
    fixture's value, called, puts the real update back (for the resume)."""
    from jmsra_agents.torch_ppo import TorchRun

    calls = {"n": 0}
    original = TorchRun._update

    def interrupt_on_second_update(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(TorchRun, "_update", interrupt_on_second_update)
    return lambda: monkeypatch.setattr(TorchRun, "_update", original)
