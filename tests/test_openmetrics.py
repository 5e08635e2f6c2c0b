"""`netdrops-collector openmetrics`: the renderer against the declared charts, the running
server checked by promtool, and a real Prometheus server (Debian's) scraping it on loopback and
answering queries with our series."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from netdatad import free_port
from netdrops_collector import charts
from netdrops_collector.frontends import openmetrics
from netdrops_collector.kernel import softnet
from netdrops_collector.kernel.links import KINDS, Link

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# What Prometheus 2.42 sends when it scrapes (scrape/scrape.go, acceptHeader).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def need(path, package):
    if not os.access(path, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("CI cannot run this test: needs {0} (Debian package {1})".format(path, package))
        pytest.skip("needs {0} (Debian package {1})".format(path, package))


def promtool_check(text):
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stdout + proc.stderr


def online_cpus():
    return softnet.parse_cpu_list(open("/sys/devices/system/cpu/online").read())


def sysctl(key):
    return int(open("/proc/sys/net/core/" + key).read())


# -- the renderer ------------------------------------------------------------------------------

def every_declared_chart():
    link = Link(7, "veth1234i0", "veth", peer_ifindex=2, peer_netnsid=0, container="pve-ct 1234")
    nic = Link(2, "eth0", "physical")
    host = charts.host_charts()
    for chart in host:
        if chart.id in charts.CPU_DIM_CHARTS:
            chart.add_dim(charts.cpu_dim_name(0))
    return host + charts.iface_charts(link, "eth0", None, 9000) + charts.iface_charts(nic, None, "br0", 9010)


def test_every_declared_dimension_has_an_export_rule():
    contexts = {v for k, v in vars(charts).items() if k.startswith("CTX_")}
    assert contexts == set(openmetrics.FAMILIES)
    exported = set()
    for chart in every_declared_chart():
        for dim in chart.dims:
            family = openmetrics.family_of(chart.context, dim.name)  # KeyError: no rule
            if family is not None:
                exported.add(family.name)
    # left out: the sums Netdata charts as `total`, and iface_packets' repeat of the inbound drops
    skipped = {(c.context, d.name) for c in every_declared_chart() for d in c.dims
               if openmetrics.family_of(c.context, d.name) is None}
    assert skipped == {(charts.CTX_SOFTNET_DROPPED, "total"), (charts.CTX_SOFTNET_SQUEEZE, "total"),
                       (charts.CTX_IFACE_PACKETS, "dropped")}
    for name in exported:
        assert name.startswith("netdrops_")


def test_names_units_and_label_escaping_pass_promtool_in_both_formats():
    need(PROMTOOL, "prometheus")
    weird = Link(9, "veth9", "veth", container='ctr "a"\\b\nc')
    chart_list = every_declared_chart() + charts.iface_charts(weird, None, None, 9020)
    values = {d.id: 3 for c in chart_list for d in c.dims}
    values["tuning_netdev_budget_usecs"] = 8000
    values["softnet_backlog_fill_cpu0"] = 25 * charts.PRECISION  # 25 %
    text = openmetrics.render(chart_list, values)
    rc, out = promtool_check(text)
    assert rc == 0 and not out.strip(), out
    assert 'container="ctr \\"a\\"\\\\b\\nc"' in text
    assert "netdrops_tuning_netdev_budget_seconds 0.008\n" in text
    assert 'netdrops_softnet_backlog_fill_ratio{cpu="0"} 0.25\n' in text
    # outbound drops are charted negative (multiplier -1) but counted positive
    assert 'netdrops_iface_drops_packets_total{container="pve-ct 1234",device="veth1234i0",direction="outbound",' \
           'kind="veth",peer="eth0",role="veth"} 3\n' in text
    assert "# TYPE netdrops_softnet_dropped_packets_total counter\n" in text
    assert "_total" not in "".join(l for l in text.splitlines(True) if " gauge" in l)

    om = openmetrics.render(chart_list, values, openmetrics=True)
    assert om.endswith("\n# EOF\n")
    assert "# TYPE netdrops_softnet_dropped_packets counter\n# UNIT netdrops_softnet_dropped_packets packets\n" in om
    assert '\nnetdrops_softnet_dropped_packets_total{cpu="0"} 3\n' in om
    families = [l.split()[2] for l in om.splitlines() if l.startswith("# TYPE ")]
    assert len(families) == len(set(families))  # each family's samples together, once


def test_accept_header_negotiation():
    assert openmetrics.wants_openmetrics(PROMETHEUS_ACCEPT)
    assert not openmetrics.wants_openmetrics(None)
    assert not openmetrics.wants_openmetrics("*/*")
    assert not openmetrics.wants_openmetrics("text/plain;version=0.0.4")
    assert not openmetrics.wants_openmetrics("application/openmetrics-text;q=0.2,text/plain;q=0.9")
    assert openmetrics.wants_openmetrics("application/openmetrics-text; version=1.0.0")


# -- the server --------------------------------------------------------------------------------

class Exporter:
    """`netdrops-collector openmetrics` on a free loopback port."""

    def __init__(self):
        self.port = free_port()
        self.url = "http://127.0.0.1:{0}/metrics".format(self.port)
        self.stopped = None
        self.proc = subprocess.Popen(["netdrops-collector", "openmetrics", "--listen",
                                      "127.0.0.1:{0}".format(self.port), "--update-every", "1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, NETDROPS_CONFIG=os.devnull))
        try:
            self._wait_answering(15)
        except BaseException:
            _rc, err = self.stop()
            raise AssertionError("the exporter did not answer in 15 s: " + err[-2000:])

    def _wait_answering(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get()
            except (OSError, urllib.error.HTTPError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def get(self, accept=None, encoding=None):
        req = urllib.request.Request(self.url, headers={k: v for k, v in (("Accept", accept),
                                                                          ("Accept-Encoding", encoding)) if v})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            return resp.status, resp.headers.get("Content-Type"), body.decode()

    def stop(self):
        """SIGTERM; (exit status, stderr). Safe to call twice."""
        if self.stopped is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)
            self.stopped = (self.proc.returncode, self.proc.stderr.read())
            self.proc.stdout.close()
            self.proc.stderr.close()
        return self.stopped


@pytest.fixture
def exporter():
    exp = Exporter()
    yield exp
    rc, err = exp.stop()
    assert rc == 0 and "Traceback" not in err, err


def sample_value(text, name, **labels):
    """The value of one sample in exposition text (labels must match exactly those given)."""
    want = "{" + ",".join('{0}="{1}"'.format(k, v) for k, v in sorted(labels.items())) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_live_scrape_passes_promtool_and_tracks_the_kernel(exporter):
    need(PROMTOOL, "prometheus")
    status, ctype, text = exporter.get()
    assert status == 200 and ctype == openmetrics.CONTENT_TYPE_PROMETHEUS
    rc, out = promtool_check(text)
    assert rc == 0 and not out.strip(), out
    assert sample_value(text, "netdrops_tuning_netdev_max_backlog_packets") == sysctl("netdev_max_backlog")
    assert sample_value(text, "netdrops_tuning_netdev_budget_packets") == sysctl("netdev_budget")
    for cpu in online_cpus():
        assert sample_value(text, "netdrops_softnet_dropped_packets_total", cpu=cpu) is not None

    status, ctype, om = exporter.get(PROMETHEUS_ACCEPT, "gzip")
    assert status == 200 and ctype == openmetrics.CONTENT_TYPE_OPENMETRICS and om.endswith("# EOF\n")

    # a second later the processed counter has moved (our own scrapes are loopback packets)
    before = sum(sample_value(text, "netdrops_softnet_processed_packets_total", cpu=c) for c in online_cpus())
    time.sleep(2.2)
    _s, _c, later = exporter.get()
    after = sum(sample_value(later, "netdrops_softnet_processed_packets_total", cpu=c) for c in online_cpus())
    assert after > before


def test_concurrent_scrapes_and_their_cost(exporter):
    errors, times = [], []

    def scrape(accept):
        for _ in range(10):
            start = time.perf_counter()
            try:
                status, _ctype, body = exporter.get(accept)
                assert status == 200 and "netdrops_tuning_netdev_max_backlog_packets" in body
                if accept:
                    assert body.endswith("# EOF\n")
            except Exception as error:  # collected, asserted below
                errors.append(error)
            times.append(time.perf_counter() - start)

    threads = [threading.Thread(target=scrape, args=(PROMETHEUS_ACCEPT if i % 2 else None,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(times) == 160
    times.sort()
    print("scrape seconds: median {0:.4f}, p95 {1:.4f}, max {2:.4f} (16 concurrent clients)".format(
        times[len(times) // 2], times[int(len(times) * 0.95)], times[-1]))
    assert times[len(times) // 2] < 0.5


def test_exporter_refuses_a_bad_listen_address():
    proc = subprocess.run(["netdrops-collector", "openmetrics", "--listen", "127.0.0.1"],
                          capture_output=True, text=True, timeout=30, env=dict(os.environ, NETDROPS_CONFIG=os.devnull))
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr and "Traceback" not in proc.stderr


# -- a real Prometheus -------------------------------------------------------------------------

class Prometheus:
    """Debian's prometheus on a loopback port with its own storage, scraping every second."""

    def __init__(self, target, root):
        self.port = free_port()
        self.root = root
        config_path = os.path.join(root, "prometheus.yml")
        with open(config_path, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: netdrops\n    static_configs:\n"
                    "      - targets: ['{0}']\n".format(target))
        self.log = open(os.path.join(root, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config_path, "--storage.tsdb.path=" + os.path.join(root, "data"),
             "--web.listen-address=127.0.0.1:{0}".format(self.port), "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=root)
        try:
            self.wait_for(lambda: self._ready(), 30, "prometheus ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        assert self.proc.poll() is None, "prometheus exited: " + open(self.log.name).read()[-2000:]
        try:
            with urllib.request.urlopen("http://127.0.0.1:{0}/-/ready".format(self.port), timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path, **params):
        url = "http://127.0.0.1:{0}/api/v1/{1}?{2}".format(self.port, path, urllib.parse.urlencode(params))
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read().decode())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    @staticmethod
    def wait_for(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            assert time.monotonic() < deadline, "no {0} after {1} s".format(what, timeout)
            time.sleep(0.25)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def test_a_real_prometheus_scrapes_and_queries_our_series(exporter):
    need(PROMETHEUS, "prometheus")
    root = tempfile.mkdtemp(prefix="netdrops-prom-")
    prom = None
    try:
        prom = Prometheus("127.0.0.1:{0}".format(exporter.port), root)
        target = prom.wait_for(lambda: [t for t in prom.api("targets")["activeTargets"]
                                        if t["health"] == "up"], 20, "target up")[0]
        assert target["labels"]["job"] == "netdrops" and target["lastError"] == ""

        backlog = prom.wait_for(lambda: prom.query("netdrops_tuning_netdev_max_backlog_packets"), 20, "tuning series")
        assert len(backlog) == 1
        assert backlog[0]["metric"]["instance"] == "127.0.0.1:{0}".format(exporter.port)
        assert float(backlog[0]["value"][1]) == sysctl("netdev_max_backlog")

        processed = prom.query("netdrops_softnet_processed_packets_total")
        assert sorted(int(s["metric"]["cpu"]) for s in processed) == online_cpus()
        dropped = prom.query("netdrops_softnet_dropped_packets_total")
        assert {s["metric"]["cpu"] for s in dropped} == {str(c) for c in online_cpus()}
        # counters move: wait until Prometheus holds a few scrapes, then ask for an increase
        expr = "sum(increase(netdrops_softnet_processed_packets_total[10s]))"
        increase = prom.wait_for(lambda: [s for s in prom.query(expr) if float(s["value"][1]) > 0], 20,
                                 "softnet processed increasing")
        assert float(increase[0]["value"][1]) > 0

        kinds = prom.query("netdrops_drops_by_kind_packets_total")
        assert {s["metric"]["kind"] for s in kinds} == set(KINDS)
        nics = prom.query('netdrops_iface_drops_packets_total{kind="physical",direction="inbound"}')
        physical = [n for n in os.listdir("/sys/class/net") if os.path.exists("/sys/class/net/{0}/device".format(n))]
        assert {s["metric"]["device"] for s in nics} >= set(physical)

        # Prometheus asked for OpenMetrics and parsed it (the exporter logs the first of each format)
        meta = prom.api("metadata", metric="netdrops_softnet_dropped_packets")
        assert meta and meta["netdrops_softnet_dropped_packets"][0]["type"] == "counter"
        assert meta["netdrops_softnet_dropped_packets"][0]["unit"] == "packets"
    finally:
        if prom is not None:
            prom.stop()
        shutil.rmtree(root, ignore_errors=True)
    _rc, err = exporter.stop()
    assert "first scrape answered in OpenMetrics 1.0.0" in err


def test_the_go_d_job_scrapes_the_default_address():
    import yaml
    from netdrops_collector import install
    from netdrops_collector.frontends import openmetrics_server
    with open(install.data_file("netdata_conf", "go.d", "prometheus-netdrops.conf")) as f:
        job = yaml.safe_load(f)["jobs"][0]
    assert job["name"] == "netdrops"
    assert job["url"] == "http://{0}{1}".format(openmetrics_server.DEFAULT_LISTEN, openmetrics_server.METRICS_PATH)
