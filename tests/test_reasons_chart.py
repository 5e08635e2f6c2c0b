"""The netdrops.drop_reasons chart counts each drop reason the kernel gives, made for real.

The collector core (run as root, so it opens the perf counters itself) is read before and
after drops of one reason are made in a lab; the chart's dimension for that reason must rise
by the events made, within 10 %. The events made are counted independently: by the kernel's
other counters (softnet column 2, Udp RcvbufErrors, the nft rule's counter) or by the
generator itself (frames sent, datagrams sent, overflowed handshakes).
"""

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


def assert_counted(counted, made, reason):
    assert made > 20, "the lab made too few {0} drops to judge: {1}".format(reason, made)
    assert abs(counted[reason] - made) <= 0.1 * made, (reason, counted[reason], made, counted)


@pytest.mark.parametrize("kind", reason_lab.REASON_KINDS)
def test_each_reason_is_counted_as_made(drop_lab, kind):
    c = collector()
    try:
        before = reason_counts(c)
        gen = reason_lab.start(drop_lab, kind, 40)
        time.sleep(WINDOW)
        gen.stop()
        time.sleep(0.3)  # the last packets in flight
        after = reason_counts(c)
        assert_counted(rise(before, after), gen.made(), kind)
        # The chart carries the reason's own dimension, added when it first counted.
        dims = {d.name for d in c.host_charts["drop_reasons"].dims}
        assert kind in dims
    finally:
        c.close()


def test_cpu_backlog_counts_softnet_drops(drop_lab):
    c = collector()
    try:
        drop_lab.run_traffic(droplab.INCIDENT)
        time.sleep(1)
        before, k_before = reason_counts(c), drop_lab.kernel_counters()
        time.sleep(WINDOW * 2)
        after, k_after = reason_counts(c), drop_lab.kernel_counters()
        counted = rise(before, after)
        made = sum(k_after.minus(k_before).softnet_dropped.values())
        assert_counted(counted, made, "cpu_backlog")
        assert counted["socket_rcvbuff"] == 0
    finally:
        c.close()


def test_socket_rcvbuff_counts_udp_rcvbuf_errors_and_shows_in_openmetrics(drop_lab):
    c = collector()
    try:
        drop_lab.run_traffic(droplab.UDP_OVERRUN)
        time.sleep(1)
        before, k_before = reason_counts(c), drop_lab.kernel_counters()
        time.sleep(WINDOW)
        after, k_after = reason_counts(c), drop_lab.kernel_counters()
        counted = rise(before, after)
        assert_counted(counted, k_after.minus(k_before).udp_rcvbuf_errors, "socket_rcvbuff")
        assert counted["cpu_backlog"] == 0  # backlog 1000: no backlog drop, and none claimed
        text = openmetrics.render(list(c.host_charts.values()), c.values, openmetrics=True)
        line = [l for l in text.splitlines()
                if l.startswith('netdrops_drop_reason_packets_total{reason="socket_rcvbuff"}')]
        assert line and float(line[0].split()[-1]) == after["socket_rcvbuff"]
    finally:
        c.close()


def test_reasons_off_means_no_chart_and_no_descriptors():
    c = core.Collector(config.build({"drop_reasons": "off"}))
    try:
        c.collect()
        assert "drop_reasons" not in c.host_charts and c.snapshot().reasons is None
    finally:
        c.close()
