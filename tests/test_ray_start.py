"""Which Ray a command runs on, and who can reach it: a private in-process Ray that listens on
loopback only unless RAY_ADDRESS names a cluster, a cluster that refuses the token in one
line, and a token file no one else can read."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import psutil

from sssl_dist.driver.ray_start import init_ray, private_auth_token

REPO = Path(__file__).resolve().parents[1]


def test_without_ray_address_a_new_private_ray_is_started(ray_session, monkeypatch):
    """`ray.init()` without an address would join the newest `ray start` cluster on the host;
    the command's Ray asks for a new one, with no dashboard."""
    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_session, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_session, "init", lambda *a, **kw: calls.append((a, kw)))
    init_ray(num_cpus=1)
    ((args, kwargs),) = calls
    assert args == () and kwargs["address"] == "local"
    assert kwargs["num_cpus"] == 1 and kwargs["include_dashboard"] is False


def _listening(proc: psutil.Process) -> list[tuple[str, str, int]]:
    try:
        conns = proc.net_connections(kind="inet")
    except psutil.Error:  # a worker that exited meanwhile
        return []
    return [(proc.name(), c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]


def test_the_in_process_ray_listens_on_loopback_only(ray_session):
    """Every listening socket of the suite's Ray (started as the commands start theirs, by
    `start_private_ray`) binds loopback: the GCS, raylet, workers, agents, autoscaler and
    dashboard head. `ss -ltnp` reads the same kernel table as psutil here."""

    @ray_session.remote
    def ping() -> int:
        return os.getpid()

    ray_session.get(ping.remote())  # at least one worker is up and listening
    me = psutil.Process()
    sockets = [s for p in (me, *me.children(recursive=True)) for s in _listening(p)]
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names and len(sockets) >= 4, sockets
    # "::ffff:127.0.0.1" is 127.0.0.1 on a dual-stack socket.
    exposed = [
        s for s in sockets if not ipaddress.ip_address(s[1].removeprefix("::ffff:")).is_loopback
    ]
    assert not exposed, exposed


def test_a_cluster_that_refuses_the_token_is_one_line_at_once(ray_session, tmp_path):
    """RAY_ADDRESS names a cluster (the suite's Ray) whose token this client does not hold:
    exit 2 with one line, after one attempt (Ray alone retries for minutes)."""
    env = dict(
        os.environ,
        RAY_ADDRESS=ray_session.get_runtime_context().gcs_address,
        RAY_AUTH_TOKEN="0" * 64,
    )
    cmd = [sys.executable, "-m", "sssl_dist", "demo", "--smoke", "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " E " in line]
    assert len(errors) == 1 and "refused this machine's token" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("InvalidAuthToken") <= 1  # Ray's own warning, once: one attempt
    assert not (tmp_path / "run").exists()


def test_the_token_an_in_process_ray_uses_is_private(tmp_path, monkeypatch):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    path = private_auth_token(home=tmp_path)
    assert path == tmp_path / ".ray" / "auth_token"
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    token = path.read_text()
    path.chmod(0o644)  # as Ray 2.60 writes it
    assert private_auth_token(home=tmp_path) == path
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_auth_token(home=tmp_path / "other") is None
