"""Fixtures: throwaway valkey-server processes on free loopback ports.

Each server runs as ``valkey-server --port <free port> --bind 127.0.0.1 --save "" --appendonly no
--dir <tmpdir>`` and is killed at teardown. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import List, Optional

import pytest

VALKEY_SERVER = shutil.which("valkey-server")
START_TIMEOUT_S = 10.0


def pytest_configure(config):
    """scripts/pytest.sh sets HICACHE_VALKEY_REQUIRE_SGLANG=1 when it has the SGLang venv: then
    the SGLang tests must run, not skip because some import broke."""
    if os.environ.get("HICACHE_VALKEY_REQUIRE_SGLANG") == "1":
        try:
            import sglang.srt.mem_cache.hicache_storage  # noqa: F401
            import sglang.srt.mem_cache.pool_host.mha  # noqa: F401
            import sglang.srt.mem_cache.pool_host.mla  # noqa: F401
            import sglang.srt.mem_cache.storage.backend_factory  # noqa: F401
        except Exception as e:
            raise pytest.UsageError(
                f"HICACHE_VALKEY_REQUIRE_SGLANG=1 but SGLang's HiCache modules do not import: {e!r}"
            ) from e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    """True when the server answers a RESP PING (with PONG, or NOAUTH under requirepass)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = s.recv(64)
            return reply.startswith(b"+PONG") or b"NOAUTH" in reply
    except OSError:
        return False


@dataclass
class ValkeyServer:
    port: int
    proc: subprocess.Popen
    dir: str
    password: Optional[str] = None
    args: List[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "valkey.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def start_valkey(*extra: str, password: Optional[str] = None) -> ValkeyServer:
    if VALKEY_SERVER is None:
        pytest.fail("valkey-server is not installed (scripts/install-deps.sh installs it)")
    last_log = ""
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        port = free_port()
        d = tempfile.mkdtemp(prefix="hicache-valkey-test-")
        args = [
            VALKEY_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "valkey.log"),
            *extra,
        ]
        if password is not None:
            args += ["--requirepass", password]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = ValkeyServer(port, proc, d, password, args)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _ping(port):
                return server
            time.sleep(0.05)
        last_log = server.log()
        server.stop()
    pytest.fail(f"valkey-server did not start: {last_log}")


@pytest.fixture(scope="session")
def valkey():
    """One server for the whole session; tests isolate themselves by model name."""
    server = start_valkey()
    yield server
    server.stop()


@pytest.fixture
def valkey_factory():
    """Starts extra servers (e.g. with --requirepass); all are killed at teardown."""
    servers: List[ValkeyServer] = []

    def make(*extra: str, password: Optional[str] = None) -> ValkeyServer:
        s = start_valkey(*extra, password=password)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests configure everything explicitly: no VALKEY_* / HICACHE_VALKEY_* from outside (the
    library location variable excepted)."""
    for name in list(os.environ):
        if name.startswith("VALKEY_") or (name.startswith("HICACHE_VALKEY_") and name != "HICACHE_VALKEY_LIB"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def model() -> str:
    """A model name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"
