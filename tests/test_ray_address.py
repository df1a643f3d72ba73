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
