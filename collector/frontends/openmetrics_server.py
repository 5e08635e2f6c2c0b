"""`netdrops-collector openmetrics`: the charts over HTTP, for go.d's prometheus module or a
Prometheus server.

The collector ticks on its own thread every update_every seconds, as the external plugin does,
and each tick publishes an immutable snapshot (frozen chart views + the values dict); a scrape
only renders the latest snapshot. So scrapes cost the same however many servers scrape, any
number may run at once (nothing they touch is ever modified), every scraper sees the same
per-interval drop ratios as the charts, and counters stay wrap-safe however rarely anyone scrapes
(softnet_stat's 32-bit counters can wrap within the hour).
"""

import collections
import gzip
import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import __version__
from . import openmetrics
from ..core import Collector

log = logging.getLogger("netdrops")

DEFAULT_LISTEN = "127.0.0.1:9477"
RETRY_SECONDS = 10
METRICS_PATH = "/metrics"

ChartView = collections.namedtuple("ChartView", "context labels dims priority")
Snapshot = collections.namedtuple("Snapshot", "charts values time")


class ListenError(ValueError):
    pass


def parse_listen(text):
    """'127.0.0.1:9477', '[::1]:9477', 'localhost:9477' or ':9477' (every address) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenError("--listen wants HOST:PORT, not {0!r}".format(text))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Exporter:
    """Owns the Collector; tick() runs on one thread only, snapshot is read by any."""

    def __init__(self, cfg, collector_factory=Collector):
        self.cfg = cfg
        self.collector_factory = collector_factory
        self.collector = None
        self.charts = {}          # chart id -> Chart currently announced
        self.snapshot = None      # the latest Snapshot, replaced whole
        self.error = None         # why there is no snapshot, while collection fails
        self.formats_seen = set()

    def tick(self):
        if self.collector is None:
            self.collector = self.collector_factory(self.cfg)
            self.charts = {}
        values = self.collector.collect()
        changes = self.collector.take_changes()
        for chart in changes.created:
            self.charts[chart.id] = chart
        for chart in changes.obsoleted:
            self.charts.pop(chart.id, None)
        views = tuple(ChartView(c.context, c.labels, tuple(c.dims), c.priority)
                      for c in sorted(self.charts.values(), key=lambda c: c.priority))
        self.snapshot = Snapshot(views, values, time.time())
        self.error = None

    def run(self, stop, clock=time.monotonic):
        """Tick every update_every seconds (aligned like the plugin's) until `stop` is set."""
        every = self.cfg["update_every"]
        while not stop.is_set():
            now = clock()
            try:
                self.tick()
                wake = (now // every + 1) * every
            except Exception as error:  # one line; keep serving the error, retry later
                log.error("collection failed: %s; retrying in %ss", error, RETRY_SECONDS)
                self.close()
                self.snapshot = None
                self.error = str(error)
                wake = now + RETRY_SECONDS
            stop.wait(max(0.0, wake - clock()))
        self.close()

    def close(self):
        if self.collector is not None:
            try:
                self.collector.close()
            finally:
                self.collector = None

    def scrape(self, accept):
        """(HTTP status, content type, body bytes) for one scrape."""
        snap = self.snapshot
        if snap is None:
            why = self.error or "no collection has finished yet"
            return 503, "text/plain; charset=utf-8", "netdrops: {0}\n".format(why).encode()
        om = openmetrics.wants_openmetrics(accept)
        fmt = "OpenMetrics 1.0.0" if om else "Prometheus text 0.0.4"
        if fmt not in self.formats_seen:  # one line per format: is anybody scraping, and how
            self.formats_seen.add(fmt)
            log.info("first scrape answered in %s", fmt)
        body = openmetrics.render(snap.charts, snap.values, openmetrics=om).encode()
        ctype = openmetrics.CONTENT_TYPE_OPENMETRICS if om else openmetrics.CONTENT_TYPE_PROMETHEUS
        return 200, ctype, body


INDEX = """<html><head><title>netdrops</title></head><body>
<h1>netdrops {0}</h1><p>Receive-path packet drops: <a href="{1}">{1}</a></p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "netdrops/" + __version__
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            status, ctype, body = self.server.exporter.scrape(self.headers.get("Accept"))
            if status == 200 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body = gzip.compress(body, compresslevel=1)
                self._send(status, ctype, body, [("Content-Encoding", "gzip")])
            else:
                self._send(status, ctype, body)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", INDEX.format(__version__, METRICS_PATH).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _send(self, status, ctype, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # the access log would write a line per scrape
        log.debug("%s %s", self.address_string(), fmt % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 makes a burst of scrapers wait a SYN retry (1 s)


def make_server(host, port, exporter):
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family = infos[0][0]
    cls = type("Server", (Server,), {"address_family": family})
    server = cls((host, port), Handler)
    server.exporter = exporter
    return server


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def serve(cfg, listen=DEFAULT_LISTEN):
    """Run until SIGTERM/SIGINT; returns an exit status."""
    try:
        host, port = parse_listen(listen)
    except ListenError as error:
        log.error("%s", error)
        return 2
    exporter = Exporter(cfg)
    stop = threading.Event()
    ticker = threading.Thread(target=exporter.run, args=(stop,), name="netdrops-collect", daemon=True)
    try:
        server = make_server(host, port, exporter)
    except OSError as error:
        log.error("cannot listen on %s: %s", listen, error)
        return 2
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: anyone who can reach it reads this host's interface names and "
                    "container names", listen)
    signal.signal(signal.SIGTERM, _interrupt)
    ticker.start()
    log.info("serving http://%s%s, collecting every %ss", listen, METRICS_PATH, cfg["update_every"])
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stop.set()
        ticker.join(timeout=5)
    return 0


def main(listen=DEFAULT_LISTEN, update_every=None):
    """The `openmetrics` command: the first job of netdrops.conf (the plugin's configuration,
    or NETDROPS_CONFIG), collected every update_every seconds."""
    from .. import config as nd_config
    from ..jobs import find_config, load_jobs
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="netdrops-collector openmetrics: %(levelname)s: %(message)s")
    if update_every is not None and update_every < 1:
        log.error("--update-every must be 1 or more")
        return 2
    try:
        jobs = load_jobs()
    except (nd_config.ConfigError, OSError, ValueError) as error:
        log.error("configuration: %s", error)
        return 2
    name, cfg = jobs[0]
    if len(jobs) > 1:
        log.warning("%s has %d jobs; serving the first, %r", find_config(), len(jobs), name)
    if update_every is not None:
        cfg["update_every"] = update_every
    return serve(cfg, listen)
