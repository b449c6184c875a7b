"""gunicorn settings for Relay, derived from the same configuration the app reads.

Imports only `config` (standard library and python-dotenv): nothing here may import the app,
requests or ssl, because this file runs in the master before gevent patches the workers.
Bad configuration stops start-up here, once, with one line.
"""

import os
import shutil
import sys
import tempfile
from typing import Any

import config as relay_config

try:
    _settings = relay_config.load()
except relay_config.ConfigError as _error:
    sys.stderr.write(f"relay: configuration error: {_error}\n")
    sys.exit(2)

bind = [
    f"[{_settings.host}]:{_settings.port}"
    if ":" in _settings.host
    else f"{_settings.host}:{_settings.port}"
]
workers = _settings.workers
# gevent's HTTP server with gunicorn's keep-alive, limits and body rules: less CPU per request
# than gunicorn's own "gevent" worker, which still works (docs/design.md §3.5).
worker_class = "relay_worker.RelayWorker"
worker_connections = _settings.worker_connections
# Streams may run for minutes; gevent workers heartbeat on their own, so this only bounds a
# worker that is truly stuck. graceful_timeout lets streams in flight finish on restart.
timeout = 120
graceful_timeout = 30
# Idle keep-alive connections are closed after 5 s: a stop or reload waits for them, so a long
# keepalive would hold every restart. nginx closes its idle upstream connections sooner (4 s,
# deploy/nginx-relay.conf), so it never sends on a connection gunicorn is closing.
keepalive = 5
accesslog = None  # Relay writes its own access line per request
errorlog = "-"
loglevel = {"DEBUG": "info", "INFO": "info", "WARNING": "warning"}.get(_settings.log_level, "error")
preload_app = False  # the app must load after gevent patches the worker (docs/design.md §3.1)
proc_name = "relay"
# gunicorn 27's control socket lives at one path per user; several gateways on a machine would
# fight over it, and Relay does not use it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Check the real bind addresses (the command line may override HOST) before serving."""
    hosts = [address.rsplit(":", 1)[0].strip("[]") for address in server.cfg.bind]
    try:
        warning = relay_config.check_exposure(_settings, hosts)
    except relay_config.ConfigError as error:
        sys.stderr.write(f"relay: configuration error: {error}\n")
        sys.exit(2)
    if warning:
        server.log.warning("relay: %s", warning)
    # One fresh directory for prometheus-client's multiprocess files, shared by all workers.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.makedirs(metrics_dir)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")


def pre_request(worker: Any, req: Any) -> None:
    """Let the app close a connection whose body it refused unread (services/server_connection).

    Only gunicorn's own workers (`-k gevent`) call it; Relay's worker records itself.
    """
    worker.log.debug("%s %s", req.method, req.path)  # gunicorn's own pre_request
    # Imported here, in the worker, after gevent has patched it (never in the master).
    from services.common import server_connection

    server_connection.remember(req)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (streams in flight) from /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(metrics_dir).startswith("relay-metrics-"):
        shutil.rmtree(metrics_dir, ignore_errors=True)
