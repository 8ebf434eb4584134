"""The set-up step that puts torch in: the CPU wheel index where it answers, the plain name
where it does not (`.ci/install-torch`, called by the Makefile)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "install-torch"


def _decide(index: str) -> subprocess.CompletedProcess:
    """What the script would run for this index (dry run, deciding although torch is there)."""
    env = dict(os.environ, TORCH_INDEX=index, TORCH_SPEC="torch==2.13.0", DRY_RUN="1", FORCE="1")
    return subprocess.run(
        ["bash", str(SCRIPT), sys.executable], env=env, capture_output=True, text=True, timeout=60
    )


def test_unreachable_cpu_index_falls_back_to_the_plain_name():
    with socket.socket() as s:  # a port with nothing listening: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _decide(f"http://127.0.0.1:{port}/whl/cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("pip install -q torch==2.13.0")
    assert "--index-url" not in proc.stdout and "not reachable" in proc.stderr


def test_reachable_cpu_index_is_used(tmp_path):
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "whl" / "cpu" / "torch" / "index.html").write_text("<html></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        proc = _decide(index)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"pip install -q --index-url {index} torch==2.13.0")


def test_installed_torch_is_left_alone():
    env = dict(os.environ, DRY_RUN="1")
    env.pop("FORCE", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), sys.executable], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == ""  # torch is importable here: nothing to do
