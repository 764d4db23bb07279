"""Servers this project starts as child processes on loopback (the demo's scoring service, the
benchmarks' servers, tests' Prefect and MLflow servers): a free port, and waiting until ready."""

from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["free_port", "wait_until_ready"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]  # (host, port) for AF_INET
        return port


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    timeout: float,
    what: str,
    poll: float = 0.5,
) -> None:
    """Return once `url` answers 200; RuntimeError naming `what` when `process` exits first
    or `timeout` seconds pass."""
    import httpx  # not on the CLI's import path

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:g} s")
        time.sleep(poll)
