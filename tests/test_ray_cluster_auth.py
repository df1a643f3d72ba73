"""A real `ray start --head` with token authentication (ray 2.60's behaviour once ~/.ray/auth_token exists): a
driver joining by host:port without RAY_AUTH_MODE=token gets the one-line error that names authentication, and with
it the same address connects; a real `ray start --address` worker with RAY_AUTH_MODE=token joins and takes the work
asked of its `sim` resource; and (slow) docs/cluster.md's recipe — head, token worker, `vla-rl train --ray_address
--runner_resources '{sim: 1}'` — trains. ray.cluster_utils.Cluster skips this path, so head and worker here are the
real CLI's."""

from __future__ import annotations

import json
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


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to this `ray start --block`'s own process group only: never `ray stop` (it stops every Ray)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def token_head(tmp_path):
    """A head started by the `ray` CLI in its own HOME (its own ~/.ray/auth_token) and session directory; one per
    test, so a test's leftovers (a refused driver, a stopped worker) never meet the next one."""
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
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def token_worker(token_head, tmp_path):
    """A `ray start --address` worker node with RAY_AUTH_MODE=token (the head's token: the same HOME here; on another
    machine a copied ~/.ray/auth_token or RAY_AUTH_TOKEN) offering the custom resource `sim`, as docs/cluster.md
    starts a simulator node."""
    port, env = token_head
    log = tmp_path / "worker.log"
    for _ in range(3):  # ray gives a raylet 30 s to register, hard-coded: on a loaded machine a start can miss it
        with log.open("w") as out:
            worker = subprocess.Popen(["ray", "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                                       "--resources", '{"sim": 1}', "--disable-usage-stats", "--block"],
                                      env={**env, "RAY_AUTH_MODE": "token"}, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        deadline = time.monotonic() + 180
        while worker.poll() is None and "Ray runtime started" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        if worker.poll() is None:
            break
    if not (worker.poll() is None and "Ray runtime started" in log.read_text()):
        if worker.poll() is None:
            _stop(worker)
        pytest.fail(f"the worker did not start: {log.read_text()[-3000:]}")
    try:
        yield port, env, log
    finally:
        _stop(worker)


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


WHERE_SIM_WORK_RUNS = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 180
while ray.cluster_resources().get("sim", 0) < 1 and time.monotonic() < deadline:
    time.sleep(0.5)
@ray.remote(num_cpus=0, resources={"sim": 1})
def where():
    return ray.get_runtime_context().get_node_id()
nodes = [n for n in ray.nodes() if n["Alive"]]
print(json.dumps({"head": [n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"]],
                  "sim": [n["NodeID"] for n in nodes if "sim" in n["Resources"]],
                  "task": ray.get(where.remote(), timeout=180)}))
"""


def test_a_token_worker_joins_and_takes_the_sim_work(token_worker):
    port, env, log = token_worker
    r = subprocess.run([sys.executable, "-c", WHERE_SIM_WORK_RUNS, f"127.0.0.1:{port}"],
                       env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:] + "\nworker: " + log.read_text()[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(seen["head"]) == 1 and len(seen["sim"]) == 1 and seen["sim"] != seen["head"]
    assert seen["task"] == seen["sim"][0]  # the `sim` work ran on the worker the token let in


@pytest.mark.slow
def test_the_documented_recipe_trains_with_the_runner_on_the_token_worker(token_worker, tmp_path):
    """docs/cluster.md on one machine: `ray start --head`, a token worker with `sim`, then `vla-rl train
    --ray_address HOST:PORT --runner_resources '{sim: 1}'` with RAY_AUTH_MODE=token: the runner can only be placed on
    the worker (the only `sim` node), and the run trains its 2 iterations."""
    from rl_setup import RUN, build_tiny_policy

    port, env, log = token_worker
    policy = build_tiny_policy(tmp_path / "policy")
    cli = [sys.executable, "-c", "from vla_rl.cli import main; raise SystemExit(main())"]
    r = subprocess.run([*cli, "train", "--policy", str(policy), *RUN, "--iterations", "2", "--ray_address",
                        f"127.0.0.1:{port}", "--runner_resources", "{sim: 1}", "--out", str(tmp_path / "run")],
                       env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:] + "\nworker: " + log.read_text()[-2000:]
    assert json.loads((tmp_path / "run/checkpoints/last/train_state.json").read_text())["iteration"] == 2
