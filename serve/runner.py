"""Starting and stopping the service: a local one-machine Ray instance (the default) or an existing cluster
(`address`), Serve's HTTP proxy on the configured host and port, the application, then a bounded wait until
GET /readyz says ready."""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from clipsam.engine.errors import ClipsamError
from clipsam.serve.config import ServeConfig

LOCAL_IP = "127.0.0.1"
STARTUP_TIMEOUT_S = 600.0
DRAIN_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.1
ANSWER_GRACE_S = 1.0  # after the last request left the ingress: its answer crosses the HTTP proxy


@dataclass
class RunningService:
    """A started service: its base URL, and whether this process started the Ray instance it runs on."""

    config: ServeConfig
    url: str
    owns_ray: bool

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> int:
        """Readiness false and new requests 503 on every ingress replica, then wait (at most timeout_s)
        for the requests in flight; returns how many of them finished."""
        from ray import serve

        handle = serve.get_deployment_handle("Ingress", self.config.app_name)
        ingress = self.config.ingress
        replicas = ingress.autoscaling["max_replicas"] if ingress.autoscaling else ingress.num_replicas
        deadline = time.monotonic() + timeout_s
        at_start: dict[str, int] = {}
        for _ in range(20 * replicas):  # the handle routes at random: enough calls reach every replica
            record = handle.drain.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
            at_start.setdefault(record["replica"], record["in_flight"])
            if len(at_start) >= replicas:
                break
        left = dict(at_start)
        while sum(left.values()) and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
            record = handle.drain.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
            left[record["replica"]] = record["in_flight"]
        time.sleep(ANSWER_GRACE_S)
        return sum(at_start.values()) - sum(left.values())

    def stop(self) -> None:
        """Remove the application; on a Ray instance this process started, stop Serve and Ray too."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        if self.owns_ray:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(self.config.app_name)


def use_loopback_only() -> None:
    """Keep every Ray process of this machine on 127.0.0.1.

    Ray replaces a loopback node address by the machine's first network address (its
    `resolve_ip_for_localhost`) unless its multi-machine mode is off; off, the GCS, raylets and workers all
    bind and connect on 127.0.0.1. Child processes read the variable; the constant is set for this process
    in case Ray was imported already.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def init_local_ray(num_cpus: float) -> None:
    """A one-machine Ray instance on 127.0.0.1, without dashboard or usage reporting."""
    import ray

    use_loopback_only()
    ray.init(
        _node_ip_address=LOCAL_IP,
        include_dashboard=False,
        num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)),
        log_to_driver=False,
        configure_logging=False,
    )


def start_service(
    config: ServeConfig, address: str | None = None, timeout_s: float = STARTUP_TIMEOUT_S
) -> RunningService:
    """Start the application and return once it is ready (ClipsamError when it is not within timeout_s).

    address: None starts a local Ray instance; "auto" or "ray://host:port" joins an existing cluster.
    """
    import ray
    from ray import serve

    from clipsam.serve.app import build_app

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    owns_ray = address is None and not ray.is_initialized()
    if owns_ray:
        init_local_ray(config.total_cpus() + 0.5)
    elif not ray.is_initialized():
        join_cluster(address)
    service = RunningService(config, f"http://{_url_host(config.host)}:{config.port}", owns_ray)
    try:
        http = {"host": config.host, "port": config.port}
        serve.start(http_options=http, proxy_location=config.proxy_location)
        _run_bounded(lambda: serve.run(build_app(config), name=config.app_name, route_prefix="/"), timeout_s)
        wait_ready(service.url, timeout_s)
    except BaseException:
        service.stop()
        raise
    return service


def wait_ready(url: str, timeout_s: float, interval_s: float = 0.5) -> dict:
    """Poll GET {url}/readyz until it answers 200 with ready true; ClipsamError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=min(10.0, timeout_s)) as response:
                record = json.loads(response.read())
                if record.get("ready"):
                    return record
                last = json.dumps(record)
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            last = str(getattr(err, "reason", err))
        time.sleep(interval_s)
    raise ClipsamError(f"the service at {url} was not ready within {timeout_s:g} s (last answer: {last})")


def _run_bounded(call, timeout_s: float) -> None:
    """Run `call` (serve.run, which waits for every replica to be constructed and warm) for at most
    timeout_s; its exception, if any, is re-raised here."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as err:  # handed to the caller's thread below
            failure.append(err)

    worker = threading.Thread(target=target, name="serve-run", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise ClipsamError(f"the application was not running within {timeout_s:g} s (see the Ray logs)")
    if failure:
        raise failure[0]


def join_cluster(address: str) -> None:
    import ray

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except ConnectionError as err:
        raise ClipsamError(f"cannot join the Ray cluster at {address!r}: {err}") from None


def _url_host(host: str) -> str:
    return LOCAL_IP if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
