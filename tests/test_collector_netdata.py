"""The collector inside a real Netdata (Debian's 1.37), installed by `netdrops-collector
install`, and real kernel drops from the lab seen through Netdata's API."""

import time

import pytest

from lab import HEAVY, RPS_TARGET_CPU
from netdrops_collector import charts

HOST_CONTEXTS = {c.context for c in charts.host_charts()}


def contexts_of(nd):
    return {c["context"] for c in nd.charts().values()}


def data_sum(nd, chart, dim, seconds):
    """Sum of a dimension's per-second values over the last `seconds`: the count Netdata saw."""
    answer = nd.api("/api/v1/data", {"chart": chart, "dimensions": dim, "after": -seconds,
                                    "points": seconds, "group": "average", "format": "json",
                                    "options": "seconds|unaligned|absolute"})
    rows = answer["data"]
    assert rows, "no data for {0}/{1}".format(chart, dim)
    return sum(row[1] or 0 for row in rows), len(rows)


def latest(nd, chart, dim):
    """The newest collected value of a dimension (None before the first)."""
    rows = nd.api("/api/v1/data", {"chart": chart, "dimensions": dim, "after": -10, "points": 10,
                                   "format": "json", "options": "seconds|absolute|nonzero"})["data"]
    values = [row[1] for row in sorted(rows) if row[1] is not None]
    return values[-1] if values else None


def test_external_plugin_charts_in_a_real_netdata(netdata_factory):
    nd = netdata_factory("plugin")
    nd.install_netdrops("plugin")
    nd.start()
    nd.wait_for(lambda: HOST_CONTEXTS <= contexts_of(nd), 60, what="netdrops contexts")
    listed = nd.charts()
    dropped = listed["netdrops_local.softnet_dropped"]
    assert set(dropped["dimensions"]) >= {"softnet_dropped_total", "softnet_dropped_cpu0", "softnet_dropped_cpu1"}
    assert dropped["units"] == "packets/s"
    nic = [c for c in listed.values() if c["context"] == "netdrops.iface_drops" and c["family"].startswith("physical/")]
    assert nic, "the host's NIC has no netdrops.iface_drops chart"
    assert "plugin error" not in nd.log_text().lower()


def test_pythond_module_charts_in_a_real_netdata(netdata_factory):
    nd = netdata_factory("pythond", pythond_modules=["netdrops"])
    nd.install_netdrops("python.d")
    nd.start()
    nd.wait_for(lambda: HOST_CONTEXTS <= contexts_of(nd), 90, what="netdrops contexts from python.d")
    tuning = nd.charts()["netdrops_local.tuning"]
    assert tuning["context"] == "netdrops.tuning"
    budget = int(open("/proc/sys/net/core/netdev_budget").read())
    nd.wait_for(lambda: latest(nd, "netdrops_local.tuning", "netdev_budget") == budget, 30,
                what="netdev_budget {0} in netdrops.tuning".format(budget))


def test_lab_drops_show_on_the_right_cpu_and_veth(netdata_factory, drop_lab):
    nd = netdata_factory("lab")
    nd.install_netdrops("plugin")
    nd.start()
    nd.wait_chart("netdrops_local.softnet_dropped")
    time.sleep(2)
    before = drop_lab.kernel_counters()
    drop_lab.run_traffic(HEAVY)
    veth_chart = "netdrops_local.iface_{0}_drops".format(charts.sanitize(drop_lab.host_ifname))
    nd.wait_chart(veth_chart, timeout=15)  # within seconds of the first drop
    time.sleep(15)
    drop_lab.stop_traffic()
    time.sleep(3)  # the last second's drops reach Netdata
    kernel = drop_lab.kernel_counters().minus(before)
    window = int(time.monotonic() - before.when) + 3
    assert kernel.rx_dropped > 100, "the lab made too few drops to compare: {0}".format(kernel)

    cpu_drops, _ = data_sum(nd, "netdrops_local.softnet_dropped", "cpu{0}".format(RPS_TARGET_CPU), window)
    other_cpu, _ = data_sum(nd, "netdrops_local.softnet_dropped", "cpu0", window)
    veth_drops, _ = data_sum(nd, veth_chart, "inbound", window)
    veth_kind, _ = data_sum(nd, "netdrops_local.drops_by_kind", "veth", window)
    # Netdata interpolates per-second rates; sums agree with the kernel's counts within a few %.
    assert cpu_drops == pytest.approx(kernel.softnet_dropped[RPS_TARGET_CPU], rel=0.1)
    assert other_cpu == pytest.approx(kernel.softnet_dropped.get(0, 0), abs=5)
    assert veth_drops == pytest.approx(kernel.rx_dropped, rel=0.1)
    assert veth_kind == pytest.approx(kernel.rx_dropped, rel=0.1)
    labels = nd.charts()[veth_chart].get("chart_labels") or {}
    if labels:  # Netdata 1.37 lists chart labels in /api/v1/charts
        assert labels.get("kind") == "veth"
        assert labels.get("container") == "netns:" + drop_lab.netns
