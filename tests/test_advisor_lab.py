"""The advisor on real drops: the drop lab (tests/lab.py) makes the kernel drop packets, a real
Netdata 1.37 with the netdrops collector (or the kernel itself) is the evidence, and the
advisor's diagnosis is checked against what the lab did and the kernel's own counters."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import reason_lab

from conftest import unavailable
from lab import DEFAULT_PORT, HEAVY, RPS_TARGET_CPU, SEED, UDP_OVERRUN
from netdatad import NETDATA_BIN, NetdataFactory
from netdrops_collector import charts

ADVISOR = [sys.executable, "-m", "netdrops_advisor.cli"]
WINDOW = 10  # seconds of lab traffic each diagnosis reads


def advise(*args, timeout=120):
    proc = subprocess.run(ADVISOR + list(args), capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def advise_json(*args):
    code, out, err = advise(*(args + ("--json",)))
    doc = json.loads(out)
    assert doc["exit_code"] == code, err
    return code, doc


def veth_chart(lab):
    return "netdrops_local.iface_{0}_drops".format(charts.sanitize(lab.host_ifname))


def finding(doc, cause):
    found = [f for f in doc["findings"] if f["id"] == cause]
    assert found, "no {0} finding in {1}".format(cause, [f["id"] for f in doc["findings"]])
    return found[0]


def recommended(doc):
    return {r["setting"]: r for r in doc["recommendations"]}


def steady_window(lab, seconds=WINDOW):
    """Let traffic settle, then the kernel's own counts over `seconds` (the advisor reads the same span)."""
    time.sleep(2)
    return lab.measure(seconds)


@pytest.fixture(scope="module")
def netdata_with_collector():
    """One real Netdata with the netdrops plugin, shared by the single-node lab tests."""
    if not os.access(NETDATA_BIN, os.X_OK) or os.geteuid() != 0:
        unavailable("needs root and Debian's netdata")
    factory = NetdataFactory()
    try:
        nd = factory("advisor")
        nd.install_netdrops()
        nd.start()
        nd.wait_chart("netdrops.softnet_dropped", timeout=60)
        yield nd
    finally:
        factory.close()


# -- a real Netdata in the drop lab ------------------------------------------------------------

@pytest.mark.netdata
def test_backlog_overflow_on_the_right_cpu_and_veth(netdata_with_collector, drop_lab):
    nd = netdata_with_collector
    drop_lab.run_traffic(HEAVY)
    nd.wait_chart(veth_chart(drop_lab), timeout=20)
    kernel = steady_window(drop_lab)
    code, doc = advise_json("--url", nd.url, "--window", str(WINDOW))

    assert code == 1 and doc["status"] == "problems"
    assert doc["source"]["kind"] == "netdata" and doc["source"]["requests"] <= 25
    overflow = finding(doc, "backlog_overflow")
    assert overflow["cpus"] == [RPS_TARGET_CPU]
    assert drop_lab.host_ifname in overflow["interfaces"]
    rec = recommended(doc)["net.core.netdev_max_backlog"]
    assert int(rec["new"]) > int(rec["current"]) == HEAVY.backlog
    assert rec["host_only"] and rec["raise_only"] and rec["cause"] == "backlog_overflow"
    assert not any(s.startswith("net.core.rmem") for s in recommended(doc))
    # the advisor's rate is the kernel's, seen through Netdata
    row = {c["metric"]: c for c in doc["success_criteria"]}["backlog drops, CPU {0}".format(RPS_TARGET_CPU)]
    kernel_rate = kernel.softnet_dropped[RPS_TARGET_CPU] / kernel.when
    print("\nlab HEAVY via Netdata: advisor {0:.2f}/s, kernel {1:.2f}/s on CPU {2}".format(
        row["now"], kernel_rate, RPS_TARGET_CPU))
    assert row["now"] == pytest.approx(kernel_rate, rel=0.3) and not row["met"]
    veth = [i for i in doc["evidence"]["interfaces"] if i["name"] == drop_lab.host_ifname][0]
    assert veth["kind"] == "veth" and veth["rps_masks"] == ["{0:x}".format(1 << RPS_TARGET_CPU)]


@pytest.mark.netdata
def test_healthy_lab_gets_no_recommendation(netdata_with_collector, drop_lab):
    nd = netdata_with_collector
    # the same bursts at the default backlog of 1000: nothing is dropped
    drop_lab.start_udp_bursts(SEED.bursts_per_sec, SEED.burst_size)
    kernel = steady_window(drop_lab)
    code, doc = advise_json("--url", nd.url, "--window", str(WINDOW))
    print("\nhealthy lab: kernel dropped {0}, advisor status {1}".format(sum(kernel.softnet_dropped.values()), doc["status"]))
    assert sum(kernel.softnet_dropped.values()) == 0 and drop_lab.received > 0
    assert code == 0 and doc["status"] == "healthy"
    assert doc["recommendations"] == []
    assert all(f["severity"] == "note" for f in doc["findings"])
    assert all(c["met"] for c in doc["success_criteria"])
    code, text, _ = advise("--url", nd.url, "--window", str(WINDOW))
    text = " ".join(text.split())
    assert code == 0 and "No receive-path problems" in text and "sysctl -w" not in text


@pytest.mark.netdata
def test_udp_receiver_that_does_not_keep_up_gets_socket_buffers_not_backlog(netdata_with_collector, drop_lab):
    nd = netdata_with_collector
    drop_lab.run_traffic(UDP_OVERRUN)
    kernel = steady_window(drop_lab)
    code, doc = advise_json("--url", nd.url, "--window", str(WINDOW))
    print("\nUDP overrun: kernel RcvbufErrors {0:.2f}/s, softnet drops {1}".format(
        kernel.udp_rcvbuf_errors / kernel.when, sum(kernel.softnet_dropped.values())))
    assert kernel.udp_rcvbuf_errors > 0
    assert code == 1
    overrun = finding(doc, "socket_rcvbuf_overflow")
    assert "not a backlog problem" in overrun["reason"]
    assert any(":{0} held by".format(DEFAULT_PORT) in line for line in overrun["evidence"]), overrun["evidence"]
    assert "backlog_overflow" not in [f["id"] for f in doc["findings"]]
    settings = set(recommended(doc))
    assert settings and settings <= {"net.core.rmem_max", "net.core.rmem_default"}
    assert "net.core.netdev_max_backlog" not in settings
    row = {c["metric"]: c for c in doc["success_criteria"]}["UDP receive-buffer errors"]
    assert row["now"] == pytest.approx(kernel.udp_rcvbuf_errors / kernel.when, rel=0.3)
    # This Netdata's plugin runs as `netdata` with no helper, so it charts no drop reasons: the
    # advisor, root on the same host, counted them live for a few seconds and says so.
    assert doc["evidence"]["reasons_source"] == "kernel", (doc["notes"], doc["evidence"].get("reasons_note"))
    assert "drop reasons counted live by the advisor" in doc["source"]["detail"]
    assert overrun["reasons_agree"] is True and overrun["confirmed_by"][0]["reason"] == "socket_rcvbuff"


# -- no Netdata: the kernel itself -------------------------------------------------------------

def _port_refuses(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_kernel_source_in_the_lab(drop_lab):
    drop_lab.run_traffic(HEAVY)
    time.sleep(2)
    before = drop_lab.kernel_counters()
    code, doc = advise_json("--source", "kernel", "--window", "6")
    kernel = drop_lab.kernel_counters().minus(before)
    assert code == 1 and doc["source"]["kind"] == "kernel"
    overflow = finding(doc, "backlog_overflow")
    assert overflow["cpus"] == [RPS_TARGET_CPU] and drop_lab.host_ifname in overflow["interfaces"]
    assert overflow["confidence"] == "high"
    assert recommended(doc)["net.core.netdev_max_backlog"]["current"] == str(HEAVY.backlog)
    cpu = [c for c in doc["evidence"]["cpus"] if c["cpu"] == RPS_TARGET_CPU][0]
    # the advisor's window lies inside the kernel's measurement
    assert 0 < cpu["dropped"] <= kernel.softnet_dropped[RPS_TARGET_CPU]
    assert cpu["dropped"] / doc["window"]["seconds"] == pytest.approx(
        kernel.softnet_dropped[RPS_TARGET_CPU] / kernel.when, rel=0.3)
    print("\nlab HEAVY, kernel source: advisor {0:.2f}/s, kernel {1:.2f}/s".format(
        cpu["dropped"] / doc["window"]["seconds"], kernel.softnet_dropped[RPS_TARGET_CPU] / kernel.when))

    # the README's command, no arguments at all: on a machine without Netdata it samples the
    # kernel for 10 s and says so (a developer's own Netdata on :19999 is read instead)
    without_netdata = _port_refuses(19999)
    started = time.monotonic()
    code, text, err = advise()
    took = time.monotonic() - started
    text = " ".join(text.split())  # the text is wrapped for people
    assert code == 1, err
    if without_netdata:
        assert "No Netdata answers at http://127.0.0.1:19999" in text
        assert "sampled the kernel directly for 10 s" in text and 10 <= took < 20
    else:
        assert "Evidence: Netdata" in text
    assert "CPU {0}".format(RPS_TARGET_CPU) in text and drop_lab.host_ifname in text
    assert "sysctl -w net.core.netdev_max_backlog=1000" in text
    assert "net.core.netdev_max_backlog = 1000" in text


def test_inside_a_network_namespace_it_prints_the_commands_for_the_host(drop_lab):
    """Run from the lab's namespace (a container's view): net.core backlog settings do not exist
    there, so the changes are labelled host-only and printed for the host."""
    drop_lab.run_traffic(HEAVY)
    time.sleep(2)
    inside = ["ip", "netns", "exec", drop_lab.netns] + ADVISOR + ["--source", "kernel", "--window", "3"]
    proc = subprocess.run(inside + ["--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    host = doc["evidence"]["host"]
    assert host["init_netns"] is False and host["in_container"] and doc["run_on_host"]
    overflow = finding(doc, "backlog_overflow")  # softnet_stat is global: the host's CPUs
    assert overflow["cpus"] == [RPS_TARGET_CPU] and overflow["confidence"] == "high"
    assert drop_lab.ns_ifname in overflow["interfaces"]  # its end of the veth counts tx drops
    rec = recommended(doc)["net.core.netdev_max_backlog"]
    assert rec["current"] is None and rec["host_only"] and int(rec["new"]) >= 1000
    # the sender's ENOBUFS (Udp SndbufErrors in its namespace) are the same packets, not a send-buffer problem
    assert not any(s.startswith("net.core.wmem") for s in recommended(doc))
    text = subprocess.run(inside, capture_output=True, text=True, timeout=60).stdout
    assert "run the host-only commands below on the host" in " ".join(text.split())
    assert "Apply now (as root on the host):" in text


# -- a parent and a child ----------------------------------------------------------------------

@pytest.mark.netdata
def test_node_and_all_nodes_read_the_child_through_the_parent(netdata_factory, drop_lab):
    parent, child = netdata_factory.parent_and_child()
    child.install_netdrops()  # the child runs new plugins within seconds
    drop_lab.run_traffic(HEAVY)
    prefix = "/host/" + child.hostname
    parent.wait_chart(veth_chart(drop_lab), timeout=60, host_prefix=prefix)
    time.sleep(WINDOW + 2)

    code, doc = advise_json("--url", parent.url, "--node", child.hostname, "--window", str(WINDOW))
    assert code == 1 and doc["node"] == child.hostname
    assert doc["source"]["kind"] == "netdata" and doc["source"]["url"] == parent.url
    overflow = finding(doc, "backlog_overflow")
    assert overflow["cpus"] == [RPS_TARGET_CPU] and drop_lab.host_ifname in overflow["interfaces"]
    rec = recommended(doc)["net.core.netdev_max_backlog"]
    assert rec["current"] == str(HEAVY.backlog)   # from the child's netdrops.tuning chart
    assert doc["run_on_host"]                      # another node's settings: its commands run there

    code, doc = advise_json("--url", parent.url, "--all-nodes", "--window", str(WINDOW))
    assert doc["mode"] == "all-nodes" and code == 1 and doc["status"] == "problems"
    by_node = {n["node"]: n for n in doc["nodes"]}
    assert set(by_node) == {parent.hostname, child.hostname}
    assert by_node[child.hostname]["source"]["kind"] == "netdata"
    assert by_node[parent.hostname]["source"]["kind"] == "netdata-stock"  # no collector on the parent
    assert "backlog_overflow" in [f["id"] for f in by_node[child.hostname]["findings"]]
    ranks = [({"problems": 0, "error": 1, "healthy": 2}[n["status"]]) for n in doc["nodes"]]
    assert ranks == sorted(ranks)

    code, text, _ = advise("--url", parent.url, "--all-nodes", "--window", str(WINDOW))
    lines = [line for line in text.splitlines() if line.startswith("  ")]
    assert code == 1 and len(lines) == 2
    assert any(child.hostname in line and "PROBLEMS" in line for line in lines)

    code, _out, err = advise("--url", parent.url, "--node", "nosuch")
    assert code == 2 and "no node named 'nosuch'" in err and child.hostname in err


# -- a TCP accept queue that overflows, through Netdata's own ip.tcp_accept_queue ----------

def tcp_ext(counter):
    """A TcpExt counter of this (the root) network namespace, from /proc/net/netstat."""
    with open("/proc/net/netstat") as f:
        rows = [line.split()[1:] for line in f if line.startswith("TcpExt:")]
    return int(dict(zip(rows[0], rows[1]))[counter])


class ListenQueueFlood:
    """A TCP listener on 127.0.0.1 with backlog 1 that never accepts, and a thread opening
    `per_second` connections to it. Once its accept queue is full the kernel drops each SYN and
    counts it in TcpExt ListenOverflows and ListenDrops of the root namespace, which Netdata
    reads. Each client is closed half a second later, before its SYN is retransmitted, so every
    connection attempt counts once and the rate stays steady."""

    def __init__(self, per_second=20):
        self.per_second = per_second
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._connect, daemon=True)

    def _connect(self):
        address, pending = self.listener.getsockname(), []
        while not self.stopping.wait(1.0 / self.per_second):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(address)
            pending.append((time.monotonic(), client))
            while pending and pending[0][0] < time.monotonic() - 0.5:
                pending.pop(0)[1].close()
        for _when, client in pending:
            client.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(10)
        self.listener.close()


def check_listen_overflow_seen(nd):
    """A real accept-queue overflow, read by the advisor from Netdata's stock ip.tcp_accept_queue
    (dimension ids ListenOverflows/ListenDrops, names overflows/drops on 1.37.1 and v2.11)."""
    with ListenQueueFlood():
        chart = nd.wait_chart("ip.tcp_accept_queue", timeout=30)  # 1.37 charts it once it moves
        assert set(chart["dimensions"]) == {"ListenOverflows", "ListenDrops"}
        time.sleep(2)
        # the kernel's count over the span the advisor then reads back from Netdata
        before, started = tcp_ext("ListenOverflows"), time.monotonic()
        time.sleep(WINDOW)
        kernel_rate = (tcp_ext("ListenOverflows") - before) / (time.monotonic() - started)
        code, doc = advise_json("--url", nd.url, "--window", str(WINDOW))
    assert doc["source"]["kind"] == "netdata-stock"
    overflow = finding(doc, "listen_queue_overflow")
    assert code == 1 and overflow["severity"] == "problem"
    sockets = doc["evidence"]["sockets"]
    advisor_rate = sockets["tcp_listen_overflows"] / doc["window"]["seconds"]
    print("\nlisten queue flood via {0}: advisor {1:.2f} overflows/s, kernel {2:.2f}/s".format(
        doc["source"]["netdata_version"], advisor_rate, kernel_rate))
    assert advisor_rate == pytest.approx(kernel_rate, rel=0.3)
    assert sockets["tcp_listen_drops"] >= sockets["tcp_listen_overflows"] > 0
    row = {c["metric"]: c for c in doc["success_criteria"]}["TCP listen drops"]
    assert not row["met"]


@pytest.mark.netdata
def test_listen_queue_overflow_through_the_stock_chart(netdata_factory):
    check_listen_overflow_seen(netdata_factory("stock-listen").start())


# -- drop reasons through Netdata --------------------------------------------------------------

@pytest.fixture
def reasons_helper():
    """The root helper (collector/reasons_helper.py, --listen: no systemd here) on a socket of this
    test, group netdata: the plugin, run by Netdata as `netdata`, gets its counters from it."""
    run_dir = "/run/netdrops-test-{0}".format(os.getpid())
    os.makedirs(run_dir, exist_ok=True)
    os.chmod(run_dir, 0o755)
    path = os.path.join(run_dir, "reasons.sock")
    helper = subprocess.Popen([sys.executable, "-m", "netdrops_collector.reasons_helper", "--listen", path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline and helper.poll() is None:
            time.sleep(0.1)
        if not os.path.exists(path):
            pytest.fail("the reasons helper did not listen: " + helper.stderr.read().decode())
        yield path
    finally:
        helper.terminate()
        try:
            helper.wait(10)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        helper.stderr.close()
        for name in os.listdir(run_dir):
            os.unlink(os.path.join(run_dir, name))
        os.rmdir(run_dir)


@pytest.mark.netdata
def test_unhandled_protocol_named_from_the_drop_reasons_chart(netdata_factory, tracefs_mounted, reasons_helper, drop_lab):
    """Frames of an ethertype nothing handles, sent into the lab's veth: the advisor reads
    netdrops.drop_reasons from a real Netdata 1.37 (its plugin, as `netdata`, counts through the
    root helper) and names the cause, with no backlog change."""
    nd = netdata_factory("reasons")
    nd.install_netdrops()
    conf = os.path.join(nd.config_dir, "netdrops.conf")
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write("drop_reasons_socket: {0}\n".format(reasons_helper) + text)
    nd.start()
    nd.wait_chart(charts.CTX_DROP_REASONS, timeout=60)
    gen = reason_lab.start(drop_lab, "unhandled_proto", 10)
    try:
        nd.wait_for(lambda: "unhandled_proto" in json.dumps(nd.find_charts(charts.CTX_DROP_REASONS)), timeout=30,
                    what="the unhandled_proto dimension")
        time.sleep(WINDOW + 2)
        code, doc = advise_json("--url", nd.url, "--window", str(WINDOW))
    finally:
        gen.stop()
    assert doc["source"]["kind"] == "netdata" and doc["evidence"]["reasons_source"] == "netdata"
    unhandled = finding(doc, "unhandled_protocol")
    print("\nunhandled frames via Netdata: made {0}, reasons {1}, confidence {2}".format(
        gen.made(), {k: v for k, v in doc["evidence"]["reasons"].items() if v}, unhandled["confidence"]))
    assert code == 1 and unhandled["confirmed_by"][0]["reason"] == "unhandled_proto"
    assert unhandled["confirmed_by"][0]["per_s"] == pytest.approx(10, rel=0.3)
    assert unhandled["confidence"] == "high", unhandled["confidence_reason"]
    assert drop_lab.host_ifname in unhandled["interfaces"]
    assert "0x88b5" in unhandled["summary"]   # the advisor is local and root: it sampled the records
    assert "net.core.netdev_max_backlog" not in recommended(doc)
    assert "unexplained_iface_drops" not in [f["id"] for f in doc["findings"]]
