"""Evidence straight from the kernel, for a machine without Netdata: the collector's core ticks
once a second over the window (the same counters, wrap handling and interface kinds the charts
use), while /proc/net/softnet_stat is also read 20 times a second for the backlog length, a
gauge that a once-a-second look almost always sees empty.

sample_kernel() does the I/O and returns a KernelSample of raw readings; evidence_from_sample()
turns one into Evidence without touching the machine.
"""

import collections
import time

from netdrops_collector import charts, config, netdev, snmp, softnet
from netdrops_collector.core import Collector
from netdrops_collector.errors import ParseError

from . import procstat, udp_sockets
from .errors import MissingEvidence
from .evidence import SOURCE_KERNEL, TUNING_KEYS, CpuEvidence, Evidence, IfaceEvidence, SocketDrop

TICK_SECONDS = 1.0
FAST_SECONDS = 0.05

KernelSample = collections.namedtuple("KernelSample", (
    "seconds start_time end_time values iface_charts backlog_peak tuning cpu_ids_guessed "
    "stat_before stat_after netdev_before netdev_after sndbuf_before sndbuf_after udp_before udp_after"))


def read_udp_sndbuf_errors(hostfs):
    """UDP (v4 + v6) SndbufErrors, which the collector does not chart; None where unreadable."""
    try:
        tables = snmp.parse_snmp_pairs(hostfs.read_text(snmp.SNMP_PATH), hostfs.path(snmp.SNMP_PATH))
    except (OSError, ParseError):
        return None
    total = tables.get("Udp", {}).get("SndbufErrors", 0)
    try:
        v6 = snmp.parse_snmp6(hostfs.read_text("proc/net/snmp6"), hostfs.path("proc/net/snmp6"))
        total += v6.get("Udp6", {}).get("Udp6SndbufErrors", 0)
    except (OSError, ParseError):
        pass
    return total


def _optional(read, hostfs):
    try:
        return read(hostfs)
    except (OSError, ParseError):
        return None


def sample_kernel(seconds, hostfs=None, clock=time.monotonic, sleep=time.sleep):
    """Sample the kernel for `seconds`; raises MissingEvidence when /proc/net/softnet_stat
    cannot be read at all."""
    cfg = config.build({})
    try:
        collector = Collector(cfg, hostfs=hostfs)
    except (OSError, ParseError) as err:
        raise MissingEvidence("Could not read the kernel's receive-path counters ({0}).".format(err))
    hostfs = collector.hostfs
    iface_charts = {}
    backlog_peak = {}

    def tick():
        collector.collect()
        for chart in collector.take_changes().created:
            if chart.context in (charts.CTX_IFACE_DROPS, charts.CTX_IFACE_NIC_LOSS):
                iface_charts[chart.id] = chart

    def look_at_backlog():
        for row in softnet.read_softnet(hostfs):
            if row.backlog_len is not None:
                backlog_peak[row.cpu] = max(backlog_peak.get(row.cpu, 0), row.backlog_len)

    try:
        stat_before = _optional(procstat.read_proc_stat, hostfs)
        netdev_before = _optional(netdev.read_netdev, hostfs)
        sndbuf_before = read_udp_sndbuf_errors(hostfs)
        udp_before = udp_sockets.read_udp_sockets(hostfs)
        start_wall = time.time()
        start = clock()
        tick()  # the baseline: totals count from here
        next_tick = start + TICK_SECONDS
        end = start + seconds
        while True:
            now = clock()
            if now >= end:
                break
            if now >= next_tick:
                tick()
                next_tick += TICK_SECONDS
            look_at_backlog()
            sleep(max(0.0, min(FAST_SECONDS, end - clock())))
        tick()
        elapsed = clock() - start
        values = dict(collector.values)
        tuning = {k: collector.tuning.get(k) for k in TUNING_KEYS}
        guessed = collector.cpu_ids_guessed
    except (OSError, ParseError) as err:
        raise MissingEvidence("Reading the kernel's receive-path counters failed ({0}).".format(err))
    finally:
        collector.close()
    return KernelSample(
        seconds=elapsed, start_time=int(start_wall), end_time=int(start_wall + elapsed),
        values=values, iface_charts=list(iface_charts.values()), backlog_peak=backlog_peak,
        tuning=tuning, cpu_ids_guessed=guessed,
        stat_before=stat_before, stat_after=_optional(procstat.read_proc_stat, hostfs),
        netdev_before=netdev_before, netdev_after=_optional(netdev.read_netdev, hostfs),
        sndbuf_before=sndbuf_before, sndbuf_after=read_udp_sndbuf_errors(hostfs),
        udp_before=udp_before, udp_after=udp_sockets.read_udp_sockets(hostfs))


def _cpu_ids(values):
    prefix = "softnet_processed_cpu"
    return sorted(int(k[len(prefix):]) for k in values if k.startswith(prefix))


def evidence_from_sample(sample, node, host):
    """KernelSample -> Evidence (pure)."""
    values = sample.values
    backlog_max = sample.tuning.get("netdev_max_backlog") or 0
    util = procstat.utilisation(sample.stat_before, sample.stat_after) \
        if sample.stat_before and sample.stat_after else {}
    cpus = []
    for cpu_id in _cpu_ids(values):
        name = charts.cpu_dim_name(cpu_id)
        peak = sample.backlog_peak.get(cpu_id)
        busy, soft = util.get(cpu_id, (None, None))
        cpus.append(CpuEvidence(
            cpu=cpu_id,
            processed=float(values.get("softnet_processed_" + name, 0)),
            dropped=float(values.get("softnet_dropped_" + name, 0)),
            squeezed=float(values.get("softnet_squeeze_" + name, 0)),
            backlog_peak_pct=(100.0 * peak / backlog_max) if peak is not None and backlog_max else None,
            busy_pct=busy, softirq_pct=soft))
    interfaces = _interfaces(sample)
    sockets = {key: float(values["socket_drops_" + key]) if "socket_drops_" + key in values else None
               for key in snmp_keys()}
    if sample.sndbuf_before is not None and sample.sndbuf_after is not None:
        sockets["udp_sndbuf_errors"] = float(max(0, sample.sndbuf_after - sample.sndbuf_before))
    else:
        sockets["udp_sndbuf_errors"] = None
    by_kind = {k[len("drops_by_kind_"):]: float(v) for k, v in values.items() if k.startswith("drops_by_kind_")}
    notes = []
    if sample.cpu_ids_guessed:
        notes.append("/proc/net/softnet_stat has no CPU id column and a CPU is offline: CPU numbers "
                     "are row numbers.")
    if not cpus:
        raise MissingEvidence("/proc/net/softnet_stat listed no CPUs.")
    socket_drops = [SocketDrop(s.proto, s.address, s.port, drops, "window", s.rx_queue, s.inode)
                    for s, drops in udp_sockets.drops_between(sample.udp_before, sample.udp_after)]
    return Evidence(
        node=node, source=SOURCE_KERNEL,
        source_detail="sampled the kernel directly for {0:.0f} s".format(sample.seconds),
        window_seconds=sample.seconds, start_time=sample.start_time, end_time=sample.end_time,
        cpus=cpus, cpu_ids_are_rows=sample.cpu_ids_guessed, interfaces=interfaces,
        drops_by_kind=by_kind or None, sockets=sockets, udp_socket_drops=socket_drops, tuning=dict(sample.tuning),
        tuning_source="kernel", host=host, notes=notes)


def snmp_keys():
    return ("udp_rcvbuf_errors", "udp_in_errors", "tcp_listen_drops", "tcp_listen_overflows")


def _interfaces(sample):
    """Interfaces the core gave charts to (configured kinds, or any that dropped in the window),
    with packets received from /proc/net/dev."""
    values = sample.values
    found = {}
    for chart in sample.iface_charts:
        device = chart.labels.get("device")
        if not device:
            continue
        iface = found.get(device)
        if iface is None:
            iface = found[device] = IfaceEvidence(
                name=device, kind=chart.labels.get("kind", "other"), role=chart.labels.get("role"),
                kind_source="netdrops", peer=chart.labels.get("peer"),
                container=chart.labels.get("container"))
        dims = {d.name: values.get(d.id) for d in chart.dims}
        if chart.context == charts.CTX_IFACE_DROPS:
            iface.inbound_drops = float(dims.get("inbound") or 0)
            iface.outbound_drops = float(dims.get("outbound") or 0)
        else:
            iface.missed = float(dims.get("missed") or 0)
            iface.fifo = float(dims.get("fifo") or 0)
    if sample.netdev_before and sample.netdev_after:
        for name, iface in found.items():
            before, after = sample.netdev_before.get(name), sample.netdev_after.get(name)
            if before and after:
                iface.rx_packets = float(max(0, after[0] - before[0]))
    return sorted(found.values(), key=lambda i: i.name)
