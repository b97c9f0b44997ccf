"""A real registry for the tests: Debian's `docker-registry` (the CNCF distribution registry),
installed with apt-get when it is missing, run on a free loopback port with its storage in a
temporary folder and a config.yml written here (never the system service or its config)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.store.standin import free_port

PACKAGE = "docker-registry"

CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def installed_binary() -> str:
    """The registry's binary, installed now if needed; skips the tests only when no install
    is possible here (no apt-get, not root, or apt cannot fetch the package)."""
    found = shutil.which(PACKAGE)
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{PACKAGE} is not installed, and installing it needs apt-get as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:  # a stale package list: refresh it once and try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = shutil.which(PACKAGE)
    if result.returncode != 0 or found is None:
        pytest.skip(f"could not install {PACKAGE}: {result.stderr.strip()[-500:]}")
    return found


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT, the host part of model names pushed to it
    root: Path
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(folder: Path) -> Registry:
    binary = installed_binary()
    port = free_port()
    root = folder / "storage"
    root.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(CONFIG.format(root=root, port=port))
    log = (folder / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()
    registry = Registry(f"127.0.0.1:{port}", root, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{PACKAGE} exited: {(folder / 'registry.log').read_text()}")
        try:
            if httpx.get(f"http://{registry.host}/v2/", timeout=1).status_code == 200:
                return registry
        except httpx.TransportError:
            time.sleep(0.1)
    registry.stop()
    raise RuntimeError(f"{PACKAGE} did not start on {registry.host}")
