"""The netdrops.drop_reasons chart counts each drop reason the kernel gives, made for real.

The collector core (run as root, so it opens the perf counters itself) is read before and
after drops of one reason are made in a lab; the chart's dimension for that reason must rise
by the events made, within 10 %. The events made are counted independently: by the kernel's
other counters (softnet column 2, Udp RcvbufErrors, the nft rule's counter) or by the
generator itself (frames sent, datagrams sent, overflowed handshakes).
"""

import socket
import time

import pytest

import lab as droplab
import reason_lab
from netdrops_collector import config, core
from netdrops_collector.frontends import openmetrics

pytestmark = pytest.mark.usefixtures("tracefs_mounted")

WINDOW = 8  # seconds of drops per reason


def collector():
    c = core.Collector(config.build({"chart_interfaces": ["ndl*"]}))
    if c.reasons is None:
        pytest.fail("the core opened no reason counters as root")
    c.collect()
    return c


def reason_counts(c):
    c.collect()
    return dict(c.reason_totals)


def rise(before, after):
    return {name: after[name] - before.get(name, 0) for name in after}


def preset_window(c, lab, traffic, seconds):
    """A lab preset running, then `seconds` of it: (reasons counted, the kernel's own counters'
    rise, reason totals at the end)."""
    lab.run_traffic(traffic)
    time.sleep(1)
    before, k_before = reason_counts(c), lab.kernel_counters()
    time.sleep(seconds)
    after, k_after = reason_counts(c), lab.kernel_counters()
    return rise(before, after), k_after.minus(k_before), after


def assert_counted(counted, made, reason):
    assert made > 20, "the lab made too few {0} drops to judge: {1}".format(reason, made)
    assert abs(counted[reason] - made) <= 0.1 * made, (reason, counted[reason], made, counted)


@pytest.mark.parametrize("kind", reason_lab.REASON_KINDS)
def test_each_reason_is_counted_as_made(drop_lab, kind):
    c = collector()
    try:
        before = reason_counts(c)
        gen = reason_lab.start(drop_lab, kind, 40)
        for _ in range(WINDOW):  # ticks, as a front-end makes them
            time.sleep(1)
            c.collect()
        gen.stop()
        time.sleep(0.3)  # the last packets in flight
        after = reason_counts(c)
        assert_counted(rise(before, after), gen.made(), kind)
        # The chart has the reason's own dimension, added when it first counted, with 0 as its
        # first value (Netdata's base for an incremental dimension) and the totals after it, so
        # what Netdata sums is every drop: the published value catches up one tick later.
        dim_id = "drop_reasons_" + kind
        assert kind in {d.name for d in c.host_charts["drop_reasons"].dims}
        c.collect()
        assert c.values[dim_id] == c.reason_totals[kind] >= after[kind]
    finally:
        c.close()


def test_cpu_backlog_counts_softnet_drops(drop_lab):
    c = collector()
    try:
        counted, kernel, _after = preset_window(c, drop_lab, droplab.INCIDENT, WINDOW * 2)
        made = sum(kernel.softnet_dropped.values())
        assert_counted(counted, made, "cpu_backlog")
        assert counted["socket_rcvbuff"] == 0
    finally:
        c.close()


def test_socket_rcvbuff_counts_udp_rcvbuf_errors_and_shows_in_openmetrics(drop_lab):
    c = collector()
    try:
        counted, kernel, after = preset_window(c, drop_lab, droplab.UDP_OVERRUN, WINDOW)
        assert_counted(counted, kernel.udp_rcvbuf_errors, "socket_rcvbuff")
        assert counted["cpu_backlog"] == 0  # backlog 1000: no backlog drop, and none claimed
        text = openmetrics.render(list(c.host_charts.values()), c.values, openmetrics=True)
        line = [l for l in text.splitlines()
                if l.startswith('netdrops_drop_reason_packets_total{reason="socket_rcvbuff"}')]
        assert line and float(line[0].split()[-1]) == after["socket_rcvbuff"]
    finally:
        c.close()


def test_a_new_reason_dimension_starts_at_zero_then_publishes_totals(requires_root, tracefs_mounted):
    """Netdata's base for a new incremental dimension is its first value: the core sends 0 the
    tick a reason first counts, so the drops of that tick are not lost in Netdata."""
    c = collector()
    try:
        c.take_changes()
        rcv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rcv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        rcv.bind(("127.0.0.1", 0))
        snd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(300):
            snd.sendto(b"x" * 200, rcv.getsockname())
        first = c.collect()
        added = [dim.name for _chart, dim in c.take_changes().dims_added]
        assert "socket_rcvbuff" in added and first["drop_reasons_socket_rcvbuff"] == 0
        assert c.reason_totals["socket_rcvbuff"] >= 290
        assert c.collect()["drop_reasons_socket_rcvbuff"] == c.reason_totals["socket_rcvbuff"]
        rcv.close()
        snd.close()
    finally:
        c.close()


def test_reasons_off_means_no_chart_and_no_descriptors():
    c = core.Collector(config.build({"drop_reasons": "off"}))
    try:
        c.collect()
        assert "drop_reasons" not in c.host_charts and c.snapshot().reasons is None
    finally:
        c.close()
