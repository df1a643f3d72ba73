"""--ray_address is checked in seconds, before anything is written."""

import socket

import pytest

from vla_rl import ray_address
from vla_rl.base.errors import ConfigError


def test_auto_without_a_cluster_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_address, "CURRENT_CLUSTER", tmp_path / "none")
    with pytest.raises(ConfigError, match="ray start --head"):
        ray_address.check_ray_address("auto")


def test_a_listening_head_passes_and_a_closed_port_fails(tmp_path, monkeypatch):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        ray_address.check_ray_address(f"127.0.0.1:{port}")
        (tmp_path / "cluster").write_text(f"127.0.0.1:{port}\n")
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.setattr(ray_address, "CURRENT_CLUSTER", tmp_path / "cluster")
        ray_address.check_ray_address("auto")
    finally:
        server.close()
    with pytest.raises(ConfigError, match=f"cannot reach the Ray head at '127.0.0.1:{port}'"):
        ray_address.check_ray_address(f"127.0.0.1:{port}", timeout=1.0)
    with pytest.raises(ConfigError, match="cannot reach"):
        ray_address.check_ray_address("no-port-here")


def test_a_refused_connection_names_authentication_and_the_token(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    e = ray_address.connect_error("10.0.0.1:6379", ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379\nmore"))
    msg = str(e)
    assert isinstance(e, ConfigError) and "\n" not in msg
    assert "Failed to connect to Ray cluster at 10.0.0.1:6379" in msg and "more" not in msg
    assert "authentication" in msg and "RAY_AUTH_MODE=token" in msg and "~/.ray/auth_token" in msg
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # token mode on, still refused: the token itself is wrong
    assert "is the head's" in str(ray_address.connect_error("auto", RuntimeError("x")))


def test_train_turns_a_failed_ray_init_into_the_one_line_error(tmp_path, monkeypatch, capsys):
    import ray

    from vla_rl.cli import main

    server = socket.create_server(("127.0.0.1", 0))  # a head that answers its port
    port = server.getsockname()[1]

    def refuse(*args, **kwargs):
        raise ConnectionError(f"Failed to connect to Ray cluster at 127.0.0.1:{port}")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    policy = tmp_path / "policy"
    from rl_setup import build_tiny_policy

    build_tiny_policy(policy)
    try:
        rc = main(["train", "--policy", str(policy), "--ray_address", f"127.0.0.1:{port}", "--out", str(tmp_path / "t"),
                   "--wandb.mode", "disabled"])
    finally:
        server.close()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "authentication" in err and "permissions" not in err
    assert not (tmp_path / "t").exists()
