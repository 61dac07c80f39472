"""Run the real ``vlmbench`` console script in a subprocess, as a user's shell would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("vlmbench")


def vlmbench(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
             input: str | None = None) -> subprocess.CompletedProcess:
    """``vlmbench ARGS`` with captured text output; the installed script, else ``python -m vlmbench``."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "vlmbench"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single 'error: ...' line of a failed command; fails if it printed a traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) >= 1, (proc.stdout, proc.stderr)
    return "\n".join(lines)
