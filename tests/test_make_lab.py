"""`make lab`, the README's first command, starts a JupyterLab server that answers, also as root.

The test runs the real Makefile target with server options passed through LAB_ARGS (no browser,
a free local port, no token), waits for the server's /api/status to answer, then stops it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".venv/bin/jupyter").exists(),
                    reason="needs make and the project's .venv (make setup)")
def test_make_lab_starts_a_server_that_answers(tmp_path):
    port = _free_port()
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.token= " \
           f"--ServerApp.port_retries=0 --ServerApp.root_dir={ROOT}"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None and status is None:
            time.sleep(1)
            status = _status(port)
        if status is None:
            proc.terminate()
            out = proc.communicate(timeout=30)[0]
            pytest.fail(f"make lab did not answer on port {port}; it printed:\n{out[-3000:]}")
        assert "started" in status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_make_lab_adds_allow_root_only_for_root():
    out = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}).stdout
    line = next(ln for ln in out.splitlines() if "jupyter lab" in ln)
    assert ("--allow-root" in line) == (os.geteuid() == 0)
