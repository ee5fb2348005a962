"""Helpers for end-to-end tests: a real ``bentoml serve`` process and its environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from eddy import settings

BENTOML = str(Path(sys.executable).parent / "bentoml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``bentoml serve TARGET`` on a free loopback port, running until ``stop()``."""

    def __init__(self, env: dict, target: str = "serving.service:Eddy", cwd: Path = settings.REPO_ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The log goes to a file: a pipe nobody reads fills up and blocks the server.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([BENTOML, "serve", target, "--port", str(self.port)],
                                     cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/livez", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def _env_with(tmp_path: Path, **extra) -> dict:
    # the prediction log goes to the test's own database unless the test names one
    env = {**os.environ, "PYTHONPATH": str(settings.REPO_ROOT), "EDDY_DATABASE_URL": f"sqlite:///{tmp_path / 'eddy.db'}",
           **extra}
    prom = tmp_path / "prometheus"
    prom.mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    # BentoML keeps its Prometheus files in $BENTOML_HOME/prometheus_multiproc_dir and empties
    # that folder whenever a server starts: servers sharing a home wipe each other's counters.
    env.setdefault("BENTOML_HOME", str(tmp_path / "bentoml"))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env



@pytest.fixture(scope="session")
def Server():  # noqa: N802 - hands the class to tests
    return _Server


@pytest.fixture(scope="session")
def env_with():
    return _env_with


class _Postgres:
    """Debian's PostgreSQL on a free loopback port, in a temporary folder, until ``stop()``.

    ``initdb`` and the server refuse to run as root: as root they run as the ``postgres``
    user the package creates."""

    def __init__(self):
        import glob
        import pwd
        import shutil

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.fail("PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="eddy-pg-"))
        self.as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._shutil = shutil
        data = self.dir / "data"
        self._run([str(self.bin / "initdb"), "-D", str(data), "-U", "eddy", "--auth=trust", "-E", "UTF8"])
        self._run([str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "60",
                   "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        self._run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "eddy", "eddy"])
        self.url = f"postgresql+psycopg://eddy@127.0.0.1:{self.port}/eddy"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self.as_user + cmd, capture_output=True, text=True, cwd=self.dir)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd[:1])} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")

    def stop(self) -> None:
        if not self.dir.exists():  # stopped already (a test taking the database away)
            return
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True, cwd=self.dir)
        self._shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    server = _Postgres()
    yield server
    server.stop()
