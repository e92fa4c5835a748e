"""import graphsys makes OpenMP workers that start after it wait passively, unless the
user chose a policy (see graphsys/__init__.py for why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = "import os, graphsys; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(ROOT)
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_passive_by_default() -> None:
    assert _policy(None) == "PASSIVE"


def test_the_users_choice_wins() -> None:
    assert _policy("ACTIVE") == "ACTIVE"
