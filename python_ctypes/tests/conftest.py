"""Fixtures: throwaway valkey-server processes on free loopback ports.

Each server runs as ``valkey-server --port <free port> --bind 127.0.0.1 --save "" --appendonly no
--dir <tmpdir> --logfile <tmpdir>/valkey.log`` and is killed at teardown. It is ready only when it
answers as itself (``INFO server`` reports its own process id), and is started again on a new
port when its bind fails. Every wait is bounded.
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
START_ATTEMPTS = 5


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


def _resp(*args: str) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def _answering_pid(port: int, password: Optional[str]) -> Optional[int]:
    """The process_id that ``INFO server`` on ``port`` reports (after ``AUTH`` when a password is
    given); None when nothing answers yet; -1 when the server wants credentials we do not have."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall((_resp("AUTH", password) if password is not None else b"") + _resp("INFO", "server"))
            f = s.makefile("rb")
            if password is not None and not f.readline().startswith(b"+OK"):
                return -1
            line = f.readline()
            if line.startswith((b"-NOAUTH", b"-NOPERM", b"-WRONGPASS")):
                return -1
            if not line.startswith(b"$"):
                return None  # -LOADING, a half-open socket...
            body = f.read(int(line[1:]))
            for row in body.decode(errors="replace").splitlines():
                if row.startswith("process_id:"):
                    return int(row.split(":", 1)[1])
            return None
    except (OSError, ValueError):
        return None


_BIND_FAILED = ("Address already in use", "Failed listening on port")


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
        """The tail of the server's log and of what it printed (e.g. a bad argument)."""
        out = []
        for name in ("stderr.log", "valkey.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    out += [f"  {name}: {line}" for line in f.read().splitlines()[-30:]]
            except OSError:
                pass
        return "\n".join(out)

    def wait_ready(self, password: Optional[str]) -> Optional[str]:
        """Waits (bounded) until the server answers as itself: ``INFO server`` on its port
        reports its own process id. Returns None when it does; "taken" when its port was not
        its own (the bind failed, or another process answers there); else why it failed."""
        deadline = time.monotonic() + START_TIMEOUT_S
        someone_else = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log()
                if any(m in log for m in _BIND_FAILED):
                    return "taken"
                return f"valkey-server on port {self.port} exited ({self.proc.returncode}) before it was ready; its log ends:\n{log}"
            pid = _answering_pid(self.port, password)
            if pid == self.proc.pid:
                return None
            if pid == -1 and "Ready to accept connections" in self.log():
                return None  # credentials we do not know: our own log says it listens
            if pid is not None and pid != -1:
                someone_else = pid
            time.sleep(0.05)
        if someone_else is not None:
            return "taken"
        return f"valkey-server on port {self.port} did not answer as itself within {START_TIMEOUT_S} s; its log ends:\n{self.log()}"


def start_valkey(*extra: str, password: Optional[str] = None) -> ValkeyServer:
    """A server that answers as itself on a free port. A port someone took between the probe and
    the bind is replaced by a new one, at most START_ATTEMPTS times; any other failure fails the
    test with the tail of the server's log."""
    if VALKEY_SERVER is None:
        pytest.fail("valkey-server is not installed (scripts/install-deps.sh installs it)")
    probe_password = password
    if probe_password is None and "--requirepass" in extra[:-1]:
        probe_password = extra[extra.index("--requirepass") + 1]
    taken: List[int] = []
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        d = tempfile.mkdtemp(prefix="hicache-valkey-test-")
        args = [
            VALKEY_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d, "--logfile", os.path.join(d, "valkey.log"),
            *extra,
        ]
        if password is not None:
            args += ["--requirepass", password]
        with open(os.path.join(d, "stderr.log"), "wb") as err:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT)
        server = ValkeyServer(port, proc, d, password, args)
        why = server.wait_ready(probe_password)
        if why is None:
            return server
        server.stop()
        if why != "taken":
            pytest.fail(why)
        taken.append(port)
    pytest.fail(f"valkey-server could not get a port of its own in {START_ATTEMPTS} attempts (tried {taken})")


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
