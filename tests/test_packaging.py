"""The installed import names: ``jmsra_env`` and ``jmsra_agents``, never a top-level ``agents``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_training_package_installs_as_jmsra_agents_and_no_agents_is_installed(tmp_path):
    # outside the repository: only what pip installed is importable
    code = (
        "import importlib.util, jmsra_agents, jmsra_agents.training, jmsra_agents.cli_train\n"
        "print(jmsra_agents.__name__, jmsra_agents.training.__name__)\n"
        "print(importlib.util.find_spec('agents'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jmsra_agents", "jmsra_agents.training", "None"]


def test_console_scripts_and_shims_point_at_jmsra_agents():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert all(v.startswith(("jmsra_agents.", "jmsra_env.")) for v in meta["project"]["scripts"].values())
    for shim in ("train.py", "evaluate.py", "sweep.py"):
        assert "from jmsra_agents." in (ROOT / shim).read_text()


def test_a_users_own_agents_package_does_not_shadow_training(tmp_path):
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "__init__.py").write_text("MINE = True\n")
    code = "import agents, jmsra_agents.training as t; print(agents.MINE, t.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "jmsra_agents.training"]
