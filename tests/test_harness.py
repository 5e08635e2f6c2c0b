"""The harness itself: the lab makes real kernel drops and puts everything back; the Netdata
fixture runs a real daemon with user plugins, health config, notifications and streaming."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error

import pytest

from lab import DropLab, HEAVY, LabError, SEED, UDP_OVERRUN, read_text, sysctl_path
from netdatad import parent_prefix, session_pids

BACKLOG = sysctl_path("net.core.netdev_max_backlog")
BUDGET = sysctl_path("net.core.netdev_budget")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_for(lab, traffic, seconds):
    """Counter increases over `seconds` of `traffic`, read after the sender has stopped."""
    before = lab.kernel_counters()
    lab.run_traffic(traffic)
    time.sleep(seconds)
    lab.stop_traffic()
    time.sleep(0.2)  # let CPU 1 finish the last burst
    return lab.kernel_counters().minus(before)


# -- the drop lab ------------------------------------------------------------------------------

@pytest.mark.lab
def test_lab_makes_real_backlog_drops_counted_alike_by_softnet_and_veth(drop_lab):
    assert read_text("/sys/class/net/{0}/queues/rx-0/rps_cpus".format(drop_lab.host_ifname)) \
        .lstrip("0,") == "2"
    delta = run_for(drop_lab, HEAVY, 5)
    assert read_text(BACKLOG) == "2"
    assert delta.rx_dropped > 50  # HEAVY: ~40/s measured
    # Each drop is counted on CPU 1's softnet row and on the host veth; anything else dropping
    # on CPU 1 meanwhile (loopback traffic under a backlog of 2) can only add to softnet.
    assert delta.rx_dropped <= delta.softnet_dropped[1] <= delta.rx_dropped + 5
    assert drop_lab.received > 0 and delta.rx_packets > 0


@pytest.mark.lab
def test_lab_seed_preset_drops_a_few_per_second(drop_lab):
    delta = run_for(drop_lab, SEED, 10)
    rate = delta.rx_dropped / 10
    assert 0.5 < rate < 2.97


@pytest.mark.lab
def test_lab_same_bursts_with_default_backlog_drop_nothing(drop_lab):
    delta = run_for(drop_lab, HEAVY._replace(backlog=1000), 3)
    assert delta.rx_packets >= 200 and delta.rx_dropped == 0


@pytest.mark.lab
def test_lab_udp_receiver_that_does_not_read_gets_rcvbuf_errors(drop_lab):
    delta = run_for(drop_lab, UDP_OVERRUN, 5)
    assert read_text(BACKLOG) == "1000"
    assert delta.udp_rcvbuf_errors >= 30  # 10 packets/s, all but the first few lost
    assert delta.rx_dropped == 0 and delta.softnet_dropped[1] == 0


@pytest.mark.lab
@pytest.mark.root
def test_lab_restores_sysctls_and_removes_namespace_even_on_interrupt(requires_root):
    original = read_text(BACKLOG), read_text(BUDGET)
    with pytest.raises(KeyboardInterrupt):
        with DropLab() as lab:
            lab.set_backlog(3)
            lab.set_sysctl("net.core.netdev_budget", 301)
            lab.start_udp_bursts(1, 5)
            assert (read_text(BACKLOG), read_text(BUDGET)) == ("3", "301")
            raise KeyboardInterrupt
    assert (read_text(BACKLOG), read_text(BUDGET)) == original
    assert lab.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout
    assert not os.path.exists("/sys/class/net/" + lab.host_ifname)


def start_lab_process(setup):
    """A python process that enters a DropLab, runs `setup` (code using `lab`), says ready."""
    code = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, {0!r})
        from lab import DropLab
        with DropLab() as lab:
            {1}
            print("ready", lab.netns, flush=True)
            time.sleep(60)
    """).format(TESTS_DIR, setup)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    words = proc.stdout.readline().split()
    assert words[:1] == ["ready"], "lab process did not start"
    return proc, words[1]


@pytest.mark.lab
@pytest.mark.root
def test_lab_is_exclusive_and_recovers_after_a_killed_lab(requires_root):
    original = read_text(BACKLOG)
    proc, netns = start_lab_process("lab.set_backlog(7)")
    try:
        with pytest.raises(LabError, match="holds"):
            with DropLab(lock_timeout=1):
                pass
        proc.send_signal(signal.SIGKILL)  # no cleanup at all
        proc.wait(timeout=10)
        assert read_text(BACKLOG) == "7"
        with DropLab():  # takes the freed lock and undoes what the dead lab left
            assert read_text(BACKLOG) == original
            assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                               text=True).stdout
    finally:
        proc.kill()
        proc.wait()
    assert read_text(BACKLOG) == original


@pytest.mark.lab
@pytest.mark.root
def test_lab_restores_on_sigterm(requires_root):
    original = read_text(BACKLOG)
    proc, netns = start_lab_process("lab.set_backlog(5)")
    try:
        assert read_text(BACKLOG) == "5"
        proc.terminate()
        assert proc.wait(timeout=30) != 0
    finally:
        proc.kill()
        proc.wait()
    assert read_text(BACKLOG) == original
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                       text=True).stdout


# -- Netdata -----------------------------------------------------------------------------------

COUNTER_PLUGIN = """#!/bin/sh
# A trivial external plugin: one chart, one dimension counting up once a second.
echo "CHART harness.counter '' 'Harness counter' 'things' harness harness.counter line 1000 1"
echo "DIMENSION count '' absolute 1 1"
i=0
while true; do
    i=$((i + 1))
    echo "BEGIN harness.counter"
    echo "SET count = $i"
    echo "END"
    sleep 1
done
"""

PYTHOND_MODULE = """
from bases.FrameworkServices.SimpleService import SimpleService

ORDER = ["answer"]
CHARTS = {"answer": {"options": [None, "Harness answer", "things", "harness", "harness.answer",
                                 "line"],
                     "lines": [["answer", None, "absolute", 1, 1]]}}


class Service(SimpleService):
    def __init__(self, configuration=None, name=None):
        SimpleService.__init__(self, configuration=configuration, name=name)
        self.order = ORDER
        self.definitions = CHARTS

    def check(self):
        return True

    def get_data(self):
        return {"answer": 42}
"""

GAUGE_PLUGIN = """#!/bin/sh
# A gauge the test sets: reports the number in the file given as $GAUGE_FILE once a second.
echo "CHART harness.gauge '' 'Harness gauge' 'things' harness harness.gauge line 1000 1"
echo "DIMENSION value '' absolute 1 1"
while true; do
    echo "BEGIN harness.gauge"
    echo "SET value = $(cat "$GAUGE_FILE")"
    echo "END"
    sleep 1
done
"""

HEALTH_CONF = """
 alarm: harness_gauge_high
    on: harness.gauge
lookup: max -1s unaligned of value
 every: 1s
  warn: $this > 3
  crit: $this > 6
    to: sysadmin
  info: the harness gauge passed its thresholds
"""


def latest_value(nd, chart, dimension, prefix=""):
    data = nd.api(prefix + "/api/v1/data", {"chart": chart, "points": 1, "after": -2,
                                            "format": "json", "options": "jsonwrap"})
    row = data["result"]["data"][0]
    return row[data["result"]["labels"].index(dimension)]


@pytest.mark.netdata
def test_netdata_serves_info_and_runs_a_user_external_plugin(netdata_factory):
    nd = netdata_factory("plain")
    nd.add_plugin("harness", COUNTER_PLUGIN)
    nd.start()
    info = nd.api("/api/v1/info")
    assert info["version"].startswith("v1.37")
    chart = nd.wait_chart("harness.counter", timeout=30)
    assert chart["context"] == "harness.counter" and "count" in chart["dimensions"]
    assert nd.wait_for(lambda: (latest_value(nd, "harness.counter", "count") or 0) > 1, 10)
    assert "cpu.cpu1_softnet_stat" in nd.charts()  # the stock proc plugin still collects
    pid = nd.proc.pid
    assert session_pids(pid)  # netdata, its spawn server and our plugin
    nd.stop()
    assert not nd.killed  # it exited on SIGTERM (1.37.1 may exit 1 on a shutdown assertion)
    assert session_pids(pid) == []
    with pytest.raises(urllib.error.URLError):
        nd.api("/api/v1/info", timeout=2)


@pytest.mark.netdata
def test_netdata_runs_a_user_pythond_module(netdata_factory):
    nd = netdata_factory("pyd", pythond_modules=["harness"])
    nd.add_pythond_module("harness", PYTHOND_MODULE)
    with nd:
        chart = nd.wait_chart("harness.answer", timeout=30)
        assert chart["id"] == "harness.answer"  # <module>.<chart>, one job named like the module
        assert nd.wait_for(lambda: latest_value(nd, chart["id"], "answer") == 42, 10)
        assert "harness" in nd.log_text()  # python.d logs into the instance's error.log


@pytest.mark.netdata
def test_netdata_loads_user_health_and_captures_notifications(netdata_factory, tmp_path):
    (tmp_path / "harness.conf").write_text(HEALTH_CONF)
    nd = netdata_factory("health", health_dir=str(tmp_path), notify=True)
    nd.add_plugin("harness", GAUGE_PLUGIN)
    gauge = nd.write_config_file("gauge", "0")
    nd.extra_env["GAUGE_FILE"] = gauge

    def notified(status):
        return nd.wait_for(lambda: [n for n in nd.notifications() if n["status"] == status],
                           30, what=status + " notification")[0]

    with nd:
        alarm = nd.wait_for(lambda: nd.alarms().get("harness.gauge.harness_gauge_high"), 30)
        assert alarm["source"].endswith("harness.conf")
        nd.wait_for(lambda: nd.alarms()["harness.gauge.harness_gauge_high"]["status"] == "CLEAR",
                    30)
        nd.write_config_file("gauge", "5")
        warning = notified("WARNING")
        nd.write_config_file("gauge", "9")
        critical = notified("CRITICAL")
    assert (warning["name"], warning["chart"], warning["host"]) == \
        ("harness_gauge_high", "harness.gauge", "health")
    assert warning["old_status"] == "CLEAR" and warning["value"] == "5"
    assert critical["old_status"] == "WARNING" and critical["value"] == "9"


@pytest.mark.netdata
def test_netdata_child_streams_to_parent(netdata_factory):
    parent, child = netdata_factory.parent_and_child()
    child.add_plugin("harness", COUNTER_PLUGIN)
    via_parent = parent_prefix(child)
    chart = parent.wait_chart("harness.counter", timeout=40, host_prefix=via_parent)
    assert chart["id"] == "harness.counter"
    assert "harness.counter" not in parent.charts()  # the parent's own host does not have it
    assert parent.api(via_parent + "/api/v1/info")["version"].startswith("v1.37")
