"""Checking a `--ray_address` before anything is written: an unreachable cluster is a one-line error, not a
two-minute hang inside `ray.init`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from vla_rl.base.errors import ConfigError

CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # written by `ray start --head` on this machine


def resolve_ray_address(address: str) -> str:
    """host:port of `address` ("auto": $RAY_ADDRESS or the cluster `ray start` recorded on this machine)."""
    if address != "auto":
        return address
    found = os.environ.get("RAY_ADDRESS", "") or (CURRENT_CLUSTER.read_text().strip() if CURRENT_CLUSTER.is_file() else "")
    if not found:
        raise ConfigError("ray_address='auto': no running Ray cluster on this machine (no RAY_ADDRESS, no "
                          f"{CURRENT_CLUSTER}) — start one with `ray start --head`, or drop --ray_address for a local Ray")
    return found


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise ConfigError unless the cluster's head answers a TCP connection within `timeout` seconds."""
    if not address:
        return
    target = resolve_ray_address(address)
    hostport = target.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise ConfigError(f"ray_address={address!r}: cannot reach the Ray head at {hostport!r} ({e}) — is "
                          "`ray start --head` running there and the port open? (drop --ray_address for a local Ray)") from None


# ray 2.60: `ray start --head` turns token authentication on when ~/.ray/auth_token exists (any local `ray.init()`
# writes one), and a process that joins by an explicit host:port uses a token only with RAY_AUTH_MODE=token.
AUTH_HELP = ("ray 2.60's `ray start --head` turns token authentication on when ~/.ray/auth_token exists (a local Ray "
             "writes one): export RAY_AUTH_MODE=token and give this process the head's token (~/.ray/auth_token, "
             "copied from the head on another machine, or RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN), for the driver and "
             "every `ray start --address` worker (docs/cluster.md)")


def connect_error(address: str, error: BaseException) -> ConfigError:
    """The one-line error for a `ray.init(address=...)` that failed after the head answered on its port: with token
    authentication on the head (ray 2.60's default) and no token here, Ray reports a generic "Failed to connect"
    (a ConnectionError, i.e. an OSError), so the likely cause is named."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    token_mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if token_mode:
        cause = ("RAY_AUTH_MODE=token is set: check that this machine's token (~/.ray/auth_token, RAY_AUTH_TOKEN_PATH "
                 "or RAY_AUTH_TOKEN) is the head's")
    else:
        cause = "likely authentication: " + AUTH_HELP
    return ConfigError(f"ray_address={address!r}: the Ray head answers but refused this driver ({first}) — {cause}")
