"""A real `ray start --head` with token authentication (ray 2.60's behaviour once ~/.ray/auth_token exists): a
driver joining by host:port without RAY_AUTH_MODE=token gets the one-line error that names authentication, and with
it the same address connects. ray.cluster_utils.Cluster skips this path, so the head here is the real CLI's."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("ray") is None, reason="needs the `ray` command")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, head: subprocess.Popen, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"`ray start --head` exited with {head.returncode}: {head.stdout.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Ray head did not open port {port} in {seconds} s")


@pytest.fixture
def token_head(tmp_path):
    """A head started by the `ray` CLI in its own HOME (its own ~/.ray/auth_token) and session directory."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray/auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env["HOME"] = str(home)
    port = _free_port()
    temp = f"/tmp/rt{secrets.token_hex(3)}"  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen(["ray", "start", "--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard",
                             "false", "--disable-usage-stats", "--temp-dir", temp, "--block"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for_port(port, head)
        yield port, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # this head's process group only: never `ray stop` (it stops every Ray)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_token_head_refuses_a_tokenless_driver_in_one_line_and_accepts_the_token(token_head, tmp_path):
    from rl_setup import build_tiny_policy

    port, env = token_head
    policy = build_tiny_policy(tmp_path / "policy")
    cli = [sys.executable, "-c", "from vla_rl.cli import main; raise SystemExit(main())"]
    r = subprocess.run([*cli, "train", "--policy", str(policy), "--ray_address", f"127.0.0.1:{port}", "--out",
                        str(tmp_path / "run"), "--wandb.mode", "disabled"], env=env, capture_output=True, text=True,
                       timeout=300)
    err = [line for line in r.stderr.splitlines() if line.startswith("vla-rl train:")]
    assert r.returncode == 2 and len(err) == 1, r.stderr[-3000:]
    assert "authentication" in err[0] and "RAY_AUTH_MODE=token" in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    joined = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', "
                             "logging_level='ERROR'); print(int(ray.cluster_resources()['CPU']))"],
                            env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=300)
    assert joined.returncode == 0 and joined.stdout.strip().splitlines()[-1] == "1", joined.stderr[-3000:]
