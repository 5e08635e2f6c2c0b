"""The measurement model's pure middle: the core's snapshots and their difference (collector/
model.py), the one evidence builder (advisor/diagnose/evidence.from_window) from a window of two
snapshots, Netdata's recorded answers (1.37.1 and v2.11) to the same window model, and verify's
before/after sums over an interface with NIC misses."""

import pytest

from netdrops_advisor.diagnose import evidence
from netdrops_advisor.sources import kernel_sampler, netdata_api, netdata_source
from netdrops_advisor.apply import verify
from netdrops_advisor.diagnose.evidence import HostFacts
from netdrops_collector import config, core, model
from netdrops_collector.kernel import snmp, tuning
from netdrops_collector.kernel.hostfs import HostFS
from netdrops_collector.kernel.links import Link
from test_advisor_support import recorded_json
from test_core import HostTree


def snap(mono, cpus, interfaces=(), by_kind=None, sockets=None, tuning_now=None, missing=False):
    return model.Snapshot(mono, 1000.0 + mono, list(cpus), list(interfaces), by_kind or {"veth": 0},
                          sockets if sockets is not None else {}, tuning_now or {"netdev_max_backlog": 1000},
                          rps_interfaces=1, sockets_missing=missing)


def test_delta_counts_over_the_window_and_appearing_things_from_zero():
    first = snap(10.0, [model.CpuSnapshot(0, 100, 5, 1, 7, 0, 3)],
                 [model.IfaceSnapshot(1, "veth1", "veth", inbound=4, received=50),
                  model.IfaceSnapshot(2, "gone0", "veth", inbound=9)],
                 by_kind={"veth": 13}, sockets={"udp_rcvbuf_errors": 2})
    last = snap(15.0, [model.CpuSnapshot(0, 400, 25, 1, 9, 0, 10), model.CpuSnapshot(1, 30, 2, 0, 1, 0, 0)],
                [model.IfaceSnapshot(1, "veth1", "veth", peer="eth0", container="c1", inbound=14, received=250),
                 model.IfaceSnapshot(3, "veth2", "veth", inbound=6, outbound=1)],
                by_kind={"veth": 33}, sockets={"udp_rcvbuf_errors": 12, "tcp_listen_drops": 4})
    w = model.delta(first, last, backlog_peaks={0: 600})
    assert (w.seconds, w.start_time, w.end_time) == (5.0, 1010, 1015)
    cpu0, cpu1 = w.cpus
    assert (cpu0.processed, cpu0.dropped, cpu0.squeezed, cpu0.rps_ipis, cpu0.backlog_peak) == (300, 20, 0, 2, 600)
    assert (cpu1.cpu, cpu1.dropped, cpu1.backlog_peak) == (1, 2, 0)   # appeared: all of it is new
    assert [i.name for i in w.interfaces] == ["veth1", "veth2"]        # gone0 vanished: left out
    veth1, veth2 = w.interfaces
    assert (veth1.inbound, veth1.received, veth1.peer, veth1.container) == (10, 200, "eth0", "c1")
    assert (veth2.inbound, veth2.outbound) == (6, 1)                   # appeared: counted from 0
    assert w.drops_by_kind == {"veth": 20}
    assert w.sockets == {"udp_rcvbuf_errors": 10, "tcp_listen_drops": 4}


def test_delta_keys_interfaces_by_the_cores_key_not_the_name():
    first = snap(0.0, [], [model.IfaceSnapshot(5, "veth9", "veth", inbound=100)])
    again = snap(1.0, [], [model.IfaceSnapshot(6, "veth9", "veth", inbound=3)])  # re-created: new index
    assert model.delta(first, again).iface("veth9").inbound == 3


def test_delta_says_nothing_of_sockets_while_snmp_is_missing_and_nothing_of_columns_a_kernel_lacks():
    first = snap(0.0, [model.CpuSnapshot(0, 1, 0, 0, None, None, None)], sockets={"udp_rcvbuf_errors": 1})
    last = snap(1.0, [model.CpuSnapshot(0, 2, 0, 0, None, None, None)], sockets={"udp_rcvbuf_errors": 1},
                missing=True)
    w = model.delta(first, last)
    assert w.sockets == {"udp_rcvbuf_errors": None}
    assert (w.cpus[0].rps_ipis, w.cpus[0].flow_limit, w.cpus[0].backlog_peak) == (None, None, None)


def test_the_cores_snapshot_is_its_running_totals(tmp_path):
    tree = HostTree(tmp_path)
    tree.add_iface("eth0", "physical")
    cfg = config.build({"interface_source": "procfs"})
    host = HostFS(tree.root)
    from netdrops_collector.kernel.sources import ProcfsSource
    c = core.Collector(cfg, host, ProcfsSource(host))
    tree.flush()
    c.collect()
    first = c.snapshot(0.0, 100.0)
    tree.softnet_rows[1] = [40, 7, 2]
    tree.backlog[1] = 250
    tree.ifaces["eth0"] = [90, 0, 3, 0]
    tree.flush()
    values = c.collect()
    last = c.snapshot(2.0, 102.0)
    assert [(x.cpu, x.processed, x.dropped, x.squeezed, x.backlog_len) for x in last.cpus] == \
        [(0, 0, 0, 0, 0), (1, 40, 7, 2, 250)]
    assert values["softnet_dropped_cpu1"] == 7 and values["softnet_backlog_fill_cpu1"] == 25000  # unchanged charts
    eth0 = last.interfaces[0]
    assert (eth0.name, eth0.kind, eth0.role, eth0.received, eth0.inbound) == ("eth0", "physical", "physical", 90, 3)
    assert last.drops_by_kind["physical"] == 3 and last.tuning["netdev_max_backlog"] == 1000
    assert set(last.sockets) <= set(snmp.SOCKET_KEYS) and "udp_rcvbuf_errors" in last.sockets
    w = model.delta(first, last)
    assert w.cpu(1).dropped == 7 and w.cpu(1).backlog_peak == 250 and w.iface("eth0").inbound == 3


# -- the one evidence builder ------------------------------------------------------------------

def kernel_window():
    first = snap(0.0, [model.CpuSnapshot(0, 0, 0, 0, 0, 0, 0), model.CpuSnapshot(1, 0, 0, 0, 0, 0, 0)],
                 [model.IfaceSnapshot(1, "eth0", "physical")],
                 sockets=dict.fromkeys(snmp.SOCKET_KEYS, 0), tuning_now=dict.fromkeys(tuning.SYSCTL_KEYS))
    tuned = dict.fromkeys(tuning.SYSCTL_KEYS)
    tuned.update(netdev_max_backlog=2, dev_weight=64, rps_default_mask="0")
    last = snap(10.0, [model.CpuSnapshot(0, 500, 0, 0, 0, 0, 0), model.CpuSnapshot(1, 900, 40, 3, 12, 0, 1)],
                [model.IfaceSnapshot(1, "eth0", "physical", received=1000, inbound=50, missed=30, fifo=2)],
                by_kind={"physical": 50, "veth": 0},
                sockets=dict(dict.fromkeys(snmp.SOCKET_KEYS, 0), udp_sndbuf_errors=6), tuning_now=tuned)
    return model.delta(first, last, backlog_peaks={1: 2})


def test_evidence_from_two_snapshots():
    sample = kernel_sampler.KernelSample(kernel_window(), None, None, [], [])
    ev = kernel_sampler.evidence_from_sample(sample, "node1", HostFacts(local=True))
    assert ev.source == evidence.SOURCE_KERNEL and ev.source_detail == "sampled the kernel directly for 10 s"
    assert (ev.window_seconds, ev.start_time, ev.end_time) == (10.0, 1000, 1010)
    cpu1 = ev.cpu(1)
    assert (cpu1.processed, cpu1.dropped, cpu1.squeezed, cpu1.rps_ipis, cpu1.flow_limit) == (900.0, 40.0, 3.0, 12.0, 0.0)
    assert cpu1.backlog_peak_pct == 100.0      # a length of 2 with netdev_max_backlog 2
    assert ev.cpu(0).backlog_peak_pct == 0.0
    eth0 = ev.iface("eth0")
    assert (eth0.rx_packets, eth0.inbound_drops, eth0.missed, eth0.fifo) == (1000.0, 50.0, 30.0, 2.0)
    assert ev.sockets["udp_sndbuf_errors"] == 6.0 and set(ev.sockets) == set(evidence.SOCKET_KEYS)
    assert set(ev.tuning) == set(tuning.ADVISOR_KEYS) and ev.tuning["netdev_max_backlog"] == 2
    assert "dev_weight" not in ev.tuning      # the advisor's subset, as tuning.py declares it
    assert ev.drops_by_kind == {"physical": 50.0, "veth": 0.0} and ev.rps_interfaces == 1
    assert ev.tuning_source == "kernel" and not ev.cpu_ids_are_rows


def test_backlog_share_without_a_limit_or_a_length_is_unknown():
    assert evidence.backlog_share(model.CpuCounts(0, backlog_peak=5), None) is None
    assert evidence.backlog_share(model.CpuCounts(0), 1000) is None
    assert evidence.backlog_share(model.CpuCounts(0, backlog_peak_pct=37.5), 1000) == 37.5  # as published


# -- Netdata's answers to the model (recorded) ------------------------------------------------

def window_of(name, context):
    return netdata_api.parse_window(recorded_json(name), context, "sum")


def test_netdata_137_per_cpu_stock_charts_to_the_model():
    w, util, notes = netdata_source.window_from_answers(
        "netdata-stock", {"cpu.softnet_stat": window_of("data_cpu_softnet_stat_stock", "cpu.softnet_stat")}, {})
    assert [c.cpu for c in w.cpus] == [0, 1] and w.cpu_ids_guessed
    assert w.cpu(1).dropped == pytest.approx(45, abs=1) and w.cpu(0).dropped == 0
    assert w.cpu(1).rps_ipis == pytest.approx(30.4, abs=0.1)   # the stock chart has it
    assert w.seconds == 30.0 and w.interfaces == [] and util == {}
    assert all(v is None for v in w.sockets.values())
    assert "row numbers" in notes[0]


def test_netdata_per_cpu_off_is_one_all_cpus_row():
    for name, context in (("data_system_softnet_stat_stock", "system.softnet_stat"),
                          ("v2.11/data_system_softnet_stat", "system.softnet_stat")):
        w, _util, notes = netdata_source.window_from_answers("netdata-stock", {context: window_of(name, context)}, {})
        assert [c.cpu for c in w.cpus] == [-1] and w.cpus[0].rps_ipis is None
        assert notes == [netdata_source.NO_PER_CPU_NOTE]


def test_netdata_137_netdrops_iface_charts_to_the_model():
    drops = window_of("data_iface_drops_vanished_veth", "netdrops.iface_drops")
    labels = netdata_api.parse_chart_labels(recorded_json("context_labels_iface_drops"))
    w, _util, _notes = netdata_source.window_from_answers(
        "netdata", {"netdrops.softnet_dropped": drops, "netdrops.iface_drops": drops}, labels)
    assert [i.name for i in w.interfaces] == ["eth0", "ndl8042h0", "ndl9298h0"]
    gone = w.iface("ndl8042h0")
    assert (gone.kind, gone.kind_source) == ("veth", "netdrops") and gone.inbound == pytest.approx(629, abs=1)
    assert w.iface("eth0").inbound == 0 and w.iface("eth0").received is None  # no net.packets asked
    assert not w.cpu_ids_guessed
    ev = netdata_source.build_evidence("n", "http://x:1", netdata_api.parse_info(recorded_json("info_single")),
                                       "netdata", {"netdrops.softnet_dropped": drops, "netdrops.iface_drops": drops},
                                       labels, [], [])
    assert ev.iface("ndl8042h0").inbound_drops == gone.inbound and ev.tuning_source is None


def test_netdata_v211_stock_charts_to_the_model():
    names = {"system.softnet_stat": "data_system_softnet_stat", "net.drops": "data_net_drops",
             "net.fifo": "data_net_fifo", "net.packets": "data_net_packets",
             "ipv4.udperrors": "data_ipv4_udperrors", "ipv6.udperrors": "data_ipv6_udperrors",
             "ip.tcp_accept_queue": "data_ip_tcp_accept_queue"}
    windows = {ctx: window_of("v2.11/" + name, ctx) for ctx, name in names.items()}
    labels = netdata_api.parse_chart_labels(recorded_json("v2.11/context_labels_net_drops"))
    w, _util, _notes = netdata_source.window_from_answers("netdata-stock", windows, labels)
    eth0 = w.iface("eth0")
    assert (eth0.kind, eth0.kind_source) == ("physical", "name") and eth0.received == 28.0
    assert (eth0.inbound, eth0.outbound, eth0.fifo) == (0.0, 0.0, 0.0)
    # every socket key has a value: ip.tcp_accept_queue is read by its dimension ids
    assert w.sockets == dict.fromkeys(snmp.SOCKET_KEYS, 0.0)
    assert w.seconds == 10.0 and w.cpus[0].processed == pytest.approx(104.1, abs=0.1)


# -- verify: before and after are one sum ------------------------------------------------------

class NicMissSource:
    """A stand-in for the core's interface source: one NIC whose counters the test moves,
    rx_dropped and rx_missed_errors apart (what rtnetlink gives the core)."""

    def __init__(self):
        self.nic = Link(2, "enp3s0", "physical")
        self.stats = [0, 0, 0, 0, 0, 0]   # rx_packets, tx_packets, rx_dropped, tx_dropped, fifo, missed
        self.last = None
        self.added = [self.nic]

    def read_changes(self):
        cur = tuple(self.stats)
        changed = [] if cur == self.last else [(2, self.last, cur)]
        self.last = cur
        return changed, []

    def take_added(self):
        added, self.added = self.added, []
        return added

    def resolve(self, keys):
        pass

    def link(self, key):
        return self.nic

    def all_links(self):
        return [self.nic]

    def peer_name(self, link):
        return None

    def master_name(self, link):
        return None

    def close(self):
        pass


def test_verify_before_and_after_are_the_same_sum_over_nic_misses(tmp_path):
    tree = HostTree(tmp_path)
    tree.flush()
    source = NicMissSource()
    metric = verify.Metric("inbound drops, enp3s0", "iface", device="enp3s0")

    def sleep(_seconds):   # the window: 20 dropped by the kernel, 30 missed by the NIC, 1000 received
        source.stats = [1000, 0, 20, 0, 0, 30]

    clock = iter(range(100)).__next__
    verify.measure(HostFS(tree.root), [metric], 10, clock=clock, sleep=sleep, source=source)
    after_count = metric.after * 1  # the fake clock says 1 s
    # "before" from a diagnosis window of the same NIC, the same counters
    first = snap(0.0, [model.CpuSnapshot(0, 0, 0, 0)], [model.IfaceSnapshot(2, "enp3s0", "physical")])
    last = snap(10.0, [model.CpuSnapshot(0, 0, 0, 0)],
                [model.IfaceSnapshot(2, "enp3s0", "physical", received=1000, inbound=50, missed=30)])
    ev = evidence.from_window(model.delta(first, last), "n", evidence.SOURCE_KERNEL, "test")
    before_count = ev.iface("enp3s0").inbound_drops
    assert after_count == before_count == 50     # rx_dropped + rx_missed_errors, both times
    assert verify.counts([metric], model.delta(first, last)) == {metric.metric: 50}


def test_verify_counts_over_a_window():
    w = kernel_window()
    rows = [verify.Metric(verify.ALL_CPUS, "softnet"), verify.Metric("cpu 1", "softnet", cpu=1),
            verify.Metric("cpu 7", "softnet", cpu=7), verify.Metric("eth0", "iface", device="eth0"),
            verify.Metric("gone", "iface", device="gone0"), verify.Metric(verify.UDP_ROW, "udp_rcvbuf")]
    assert verify.counts(rows, w) == {verify.ALL_CPUS: 40, "cpu 1": 40, "cpu 7": None, "eth0": 50,
                                      "gone": None, verify.UDP_ROW: 0}
