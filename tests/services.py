"""Real services the integration tests start on loopback: a free port, a process started in its own
process group and stopped by its id, a readiness wait, and Debian packages installed with apt-get
when missing (root, as on CI). Only processes started here are stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def append_to_path(venv: Path, name: str, *folders: str | Path) -> None:
    """Append ``folders`` to the sys.path of the virtualenv ``venv`` (a .pth file ``name``; .pth
    files inside those folders are not processed, so an editable install there stays out)."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / f"{name}.pth").write_text("".join(f"{folder}\n" for folder in folders))


def apt_install(packages: Sequence[str], *, present: Callable[[], bool]) -> None:
    """Install Debian ``packages`` with apt-get unless ``present()`` already holds."""
    if present():
        return
    install = subprocess.run(
        f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(packages)}",
        shell=True, capture_output=True, text=True, timeout=600, check=False)
    if install.returncode != 0 or not present():
        pytest.fail(f"could not install {', '.join(packages)} with apt-get: {install.stderr.strip().splitlines()[-1:]}")


def start(args: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """``args`` in a new process group (so its children stop with it), output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop the process group of ``proc`` (one this module started): ``sig``, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def wait_until(ready: Callable[[], bool], *, procs: Sequence[subprocess.Popen[bytes]], timeout: float,
               what: str, log: Path) -> None:
    """Poll ``ready`` until it holds; fail with the log's path when a process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        exited = [p.args[0] for p in procs if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            pytest.fail(f"{what} did not come up ({'exited' if exited else f'{timeout:.0f} s'}); log {log}:\n{tail}")
        time.sleep(0.5)
