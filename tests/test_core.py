"""The collector core over a host tree written by the test (the /proc/net/dev source), tick by
tick: wrap-safe softnet totals, charts appearing on first drop, vanishing interfaces."""

import os

from netdrops_collector import config, core
from netdrops_collector.kernel.counters import WRAP32
from netdrops_collector.kernel.hostfs import HostFS
from netdrops_collector.kernel.sources import ProcfsSource

NETDEV_HEADER = ("Inter-|   Receive                                                |  Transmit\n"
                 " face |bytes    packets errs drop fifo frame compressed multicast|"
                 "bytes    packets errs drop fifo colls carrier compressed\n")


class HostTree:
    """A minimal /proc + /sys under a temporary directory, rewritten between ticks."""

    def __init__(self, root):
        self.root = str(root)
        self.ifaces = {}
        self.softnet_rows = {0: [0, 0, 0], 1: [0, 0, 0]}
        self.backlog = {0: 0, 1: 0}
        for d in ("proc/net", "proc/sys/net/core", "sys/devices/system/cpu", "sys/class/net"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        self.write("sys/devices/system/cpu/online", "0-1\n")
        self.write("sys/devices/system/cpu/possible", "0-1\n")
        self.write("proc/net/snmp", "Udp: InDatagrams InErrors RcvbufErrors\nUdp: 1 0 0\n")
        for key, value in (("netdev_max_backlog", 1000), ("netdev_budget", 300), ("rmem_max", 212992)):
            self.write("proc/sys/net/core/" + key, "{0}\n".format(value))

    def write(self, rel, text):
        with open(os.path.join(self.root, rel), "w") as f:
            f.write(text)

    def add_iface(self, name, kind):
        self.ifaces[name] = [0, 0, 0, 0]  # rx_packets, tx_packets, rx_drop, tx_drop
        d = os.path.join(self.root, "sys/class/net", name)
        os.makedirs(d, exist_ok=True)
        if kind == "physical":
            os.makedirs(os.path.join(d, "device"), exist_ok=True)
        if kind == "bridge":
            self.write("sys/class/net/{0}/uevent".format(name), "DEVTYPE=bridge\n")
        if kind == "veth":
            self.write("sys/class/net/{0}/ifindex".format(name), "7\n")
            self.write("sys/class/net/{0}/iflink".format(name), "8\n")

    def remove_iface(self, name):
        del self.ifaces[name]

    def flush(self):
        lines = []
        for name, (rxp, txp, rxd, txd) in self.ifaces.items():
            lines.append("{0:>6}: 0 {1} 0 {2} 0 0 0 0 0 {3} 0 {4} 0 0 0 0\n".format(name, rxp, rxd, txp, txd))
        self.write("proc/net/dev", NETDEV_HEADER + "".join(lines))
        rows = []
        for cpu, (processed, dropped, squeeze) in sorted(self.softnet_rows.items()):
            fields = [processed % WRAP32, dropped % WRAP32, squeeze % WRAP32] + [0] * 8 + [self.backlog[cpu], cpu, 0, 0]
            rows.append(" ".join("{0:08x}".format(v) for v in fields) + "\n")
        self.write("proc/net/softnet_stat", "".join(rows))


def make_collector(tree, **options):
    cfg = config.build(dict(options, interface_source="procfs"))
    host = HostFS(tree.root)
    return core.Collector(cfg, host, ProcfsSource(host))


def tick(tree, collector):
    tree.flush()
    values = collector.collect()
    return values, collector.take_changes()


def test_softnet_totals_survive_a_32_bit_wrap(tmp_path):
    tree = HostTree(tmp_path)
    tree.softnet_rows[1] = [0, WRAP32 - 10, 0]
    c = make_collector(tree)
    tick(tree, c)
    tree.softnet_rows[1][1] = WRAP32 + 5  # the kernel prints 5: it wrapped
    values, _ = tick(tree, c)
    assert values["softnet_dropped_cpu1"] == 15
    assert values["softnet_dropped_total"] == 15


def test_backlog_fill_is_a_share_of_netdev_max_backlog(tmp_path):
    tree = HostTree(tmp_path)
    tree.backlog[0] = 850
    c = make_collector(tree)
    values, changes = tick(tree, c)
    assert values["softnet_backlog_fill_cpu0"] == 85000  # 85.000 % with divisor 1000
    fill = [ch for ch in changes.created if ch.context == "netdrops.softnet_backlog_fill"][0]
    assert [d.name for d in fill.dims] == ["cpu0", "cpu1"]
    assert fill.dims[0].divisor == 1000


def test_interface_gets_charts_on_first_drop_and_loses_them_when_gone(tmp_path):
    tree = HostTree(tmp_path)
    tree.add_iface("eth0", "physical")
    tree.add_iface("veth1a2b", "veth")
    tree.add_iface("lo", "other")
    c = make_collector(tree)
    _, changes = tick(tree, c)
    created = {ch.id for ch in changes.created}
    assert "iface_eth0_drops" in created  # physical: charted by configuration
    assert "iface_veth1a2b_drops" not in created  # a veth only once it drops

    tree.ifaces["veth1a2b"] = [100, 0, 4, 0]
    tree.ifaces["lo"] = [100, 0, 3, 0]
    values, changes = tick(tree, c)
    assert {ch.id for ch in changes.created} == {"iface_veth1a2b_drops", "iface_veth1a2b_drop_ratio",
                                                 "iface_veth1a2b_packets"}
    drops = [ch for ch in changes.created if ch.id == "iface_veth1a2b_drops"][0]
    assert drops.labels["kind"] == "veth" and drops.family == "veth/veth1a2b"
    assert values["iface_veth1a2b_drops_inbound"] == 4
    assert values["iface_veth1a2b_drop_ratio_inbound"] == 4 * 100 * 1000 // 104
    assert values["iface_veth1a2b_packets_received"] == 100
    assert values["iface_veth1a2b_packets_dropped"] == 4
    assert values["drops_by_kind_veth"] == 4
    assert values["drops_by_kind_other"] == 3  # lo counts in the totals, without charts of its own
    assert not any(ch.id.startswith("iface_lo_") for ch in changes.created)

    values, _ = tick(tree, c)
    assert values["iface_veth1a2b_drop_ratio_inbound"] == 0  # nothing arrived this tick

    tree.remove_iface("veth1a2b")
    values, changes = tick(tree, c)
    assert {ch.id for ch in changes.obsoleted} == {"iface_veth1a2b_drops", "iface_veth1a2b_drop_ratio",
                                                   "iface_veth1a2b_packets"}
    assert not any(k.startswith("iface_veth1a2b") for k in values)
    assert values["drops_by_kind_veth"] == 4  # a vanished interface's drops stay counted
    assert "veth1a2b" not in c.ifaces


def test_interface_that_appears_after_start_counts_from_zero(tmp_path):
    tree = HostTree(tmp_path)
    c = make_collector(tree)
    tick(tree, c)
    tree.add_iface("veth9", "veth")
    tree.ifaces["veth9"] = [10, 0, 2, 0]
    values, changes = tick(tree, c)
    assert values["iface_veth9_drops_inbound"] == 2
    assert values["drops_by_kind_veth"] == 2


def test_drop_ratio_never_exceeds_100_percent(tmp_path):
    tree = HostTree(tmp_path)
    tree.add_iface("eth0", "physical")
    c = make_collector(tree)
    tick(tree, c)
    tree.ifaces["eth0"] = [0, 0, 50, 0]  # drops with no packets delivered at all
    values, _ = tick(tree, c)
    assert values["iface_eth0_drop_ratio_inbound"] == 100 * 1000


def test_chart_cap_bounds_interface_charts(tmp_path):
    tree = HostTree(tmp_path)
    c = make_collector(tree, chart_kinds=[], max_interface_charts=3)
    tick(tree, c)
    for i in range(10):
        tree.add_iface("veth{0}".format(i), "veth")
        tree.ifaces["veth{0}".format(i)] = [1, 0, 1, 0]
    values, changes = tick(tree, c)
    assert len(c.ifaces) == 3
    assert values["drops_by_kind_veth"] == 10  # every interface still counts by kind


def test_tuning_values_are_published(tmp_path):
    tree = HostTree(tmp_path)
    c = make_collector(tree)
    values, _ = tick(tree, c)
    assert values["tuning_netdev_max_backlog"] == 1000
    assert values["tuning_netdev_budget"] == 300
    assert "tuning_netdev_budget_usecs" not in values  # this tree's kernel has no such key
