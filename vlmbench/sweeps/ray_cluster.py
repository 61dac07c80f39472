"""Sweep cells as Ray tasks: each runs the cell's vlmbench command on a cluster node, in the folder the sweep
started from (the results folder must be on storage every node shares)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vlmbench.errors import VlmbenchError
from vlmbench.sweeps.grid import Execute, run_command

LOCAL = "local"  # --ray local: a Ray instance on this machine, started for the sweep


def _check_answers(address: str) -> None:
    """A one-line error unless something listens at ``address`` (host:port, optionally ray://...)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise VlmbenchError(f"--ray {address}: give host:port of the cluster's head (or 'local')")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise VlmbenchError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def connect(address: str, workers: int) -> Execute:
    """Join (or, for 'local', start) a Ray cluster; the function that runs one cell there."""
    if address != LOCAL:
        _check_answers(address)
    try:
        import ray
    except ImportError:
        raise VlmbenchError("--ray needs Ray: pip install 'vlmbench[ray]'") from None
    env = {"env_vars": {k: os.environ[k] for k in ("PYTHONPATH", "MUJOCO_GL") if k in os.environ}}
    try:
        if address == LOCAL:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=env,
                     ignore_reinit_error=True)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise VlmbenchError(f"--ray {address}: cannot join the cluster ({' '.join(str(exc).split())})") from None
    remote = ray.remote(num_cpus=1, max_retries=0)(run_command)
    cwd = os.getcwd()

    def execute(args: list[str], log: Path) -> tuple[int, str]:
        return ray.get(remote.remote(args, log, cwd))

    return execute


def disconnect() -> None:
    import ray

    ray.shutdown()
