"""Which Ray a command runs on: the cluster that RAY_ADDRESS names, or else a private Ray
started in this process that only this machine can reach.

Left to itself, `ray.init()` without an address joins the newest `ray start` cluster on the
host (perhaps another user's), and a Ray it starts listens on every network interface (GCS,
raylet, workers, agents, an unauthenticated Prometheus endpoint). `start_private_ray` asks for
a new instance (`address="local"`) whose processes bind loopback only, with no dashboard and
no metrics export: a local run needs neither.

Nothing here imports Ray at module level: `keep_ray_local` must run before Ray is imported.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from pathlib import Path
from unittest import mock

log = logging.getLogger(__name__)

# Environment read by Ray where each of its processes starts:
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's single-machine mode (its default on macOS and
#   Windows): the node IP is 127.0.0.1, so the GCS, raylet, workers and agents bind loopback.
#   Ray reads it once, when `ray` is imported.
# - RAY_enable_metrics_collection=0: the dashboard agent starts no Prometheus exporter.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_enable_metrics_collection": "0"}
# Attempts ray.init makes to reach a cluster's GCS (Ray's default: 20, one a second while the
# token is refused; each one up to 40 s when the address does not answer). A refused token or
# a wrong address does not change between attempts, and a job's cluster is already up.
CONNECT_ATTEMPTS = 1


def keep_ray_local() -> None:
    """Make a Ray started from this process bind loopback only and export no metrics. Call
    it before anything imports `ray` (the CLI does, first thing, when RAY_ADDRESS is unset)."""
    os.environ.update(LOCAL_ONLY_ENV)


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster at RAY_ADDRESS, or start a private Ray with `num_cpus` CPUs
    (all when None). Nothing happens when Ray is already up in this process."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        connect_to_cluster(address)
    else:
        start_private_ray(num_cpus)


def start_private_ray(num_cpus: int | None = None) -> None:
    """A new Ray in this process, never one already running on the host; listening on
    loopback only. Raises RuntimeError when Ray was imported before `keep_ray_local` ran (it
    would listen on the network)."""
    keep_ray_local()
    import ray

    private_auth_token()
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    node_ip = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node_ip).is_loopback:
        ray.shutdown()
        raise RuntimeError(
            f"the in-process Ray would listen on {node_ip}, not on loopback only: `ray` was "
            "imported before sssl_dist.driver.ray_start.keep_ray_local() ran"
        )
    log.info(
        "started Ray in-process (%.1f s, %s CPUs, listening on loopback only)",
        time.perf_counter() - t0,
        int(ray.cluster_resources().get("CPU", 0)),
    )


def connect_to_cluster(address: str) -> None:
    """Join the cluster at `address`, or raise RuntimeError in one line: the cluster refused
    this machine's token, or did not answer."""
    import ray

    wait = {"RAY_gcs_server_port_wait_time_s": str(CONNECT_ATTEMPTS)}
    try:
        with mock.patch.dict(os.environ, wait):
            ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:  # Ray's "Failed to connect to Ray cluster at ..."
        cause = f"{exc} {exc.__cause__ or ''}"
        if "InvalidAuthToken" in cause or "Unauthenticated" in cause:
            raise RuntimeError(
                f"the Ray cluster at {address} (RAY_ADDRESS) refused this machine's token: set "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to that cluster's token (docs/cluster.md)"
                ", or unset RAY_ADDRESS to run on a private Ray in this process"
            ) from None
        raise RuntimeError(
            f"no Ray cluster answered at {address} (RAY_ADDRESS): check the address, or unset "
            "RAY_ADDRESS to run on a private Ray in this process"
        ) from None
    log.info("connected to Ray cluster at %s", address)


def private_auth_token(home: Path | None = None) -> Path | None:
    """Make sure the token an in-process Ray will use is readable by its owner only.

    Ray 2.60 turns token authentication on when `ray.init()` starts a local Ray, and writes a
    new ~/.ray/auth_token with the process umask: world-readable (644) by default. Created here
    first, with mode 600, it is the one Ray reads (256 random bits, as Ray's own generator
    makes); an existing one is tightened to 600. Nothing is done when the token comes from the
    environment or authentication is disabled. Returns the token file, or None."""
    env = os.environ
    if env.get("RAY_AUTH_MODE") == "disabled" or env.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else None
    path = path or (home or Path.home()) / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            log.info("%s was readable by others: now mode 600", path)
        return path
    import secrets

    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path
