"""Evidence from a Netdata agent: the netdrops.* charts when the collector runs there, else
Netdata's own softnet, interface and UDP charts.

read_node() makes the requests (one per context, so the count does not grow with CPUs or
interfaces); build_evidence() turns the answers into Evidence without any I/O.
"""

import re

from netdrops_collector import charts as nd_charts
from netdrops_collector import model

from ..errors import MissingEvidence, NetdataHTTPError
from ..diagnose.evidence import (SOCKET_KEYS, SOURCE_NETDROPS, SOURCE_STOCK, TUNING_KEYS, Alarm, from_window,
                                 guess_kind)
from .netdata_api import is_no_metrics

SUM, MAX, AVERAGE = "sum", "max", "average"

# context -> how its points are folded into one value over the window
NETDROPS_PLAN = (
    (nd_charts.CTX_SOFTNET_DROPPED, SUM),
    (nd_charts.CTX_SOFTNET_SQUEEZE, SUM),
    (nd_charts.CTX_SOFTNET_PROCESSED, SUM),
    (nd_charts.CTX_BACKLOG_FILL, MAX),
    (nd_charts.CTX_DROPS_BY_KIND, SUM),
    (nd_charts.CTX_IFACE_DROPS, SUM),
    (nd_charts.CTX_IFACE_NIC_LOSS, SUM),
    (nd_charts.CTX_SOCKET_DROPS, SUM),
    (nd_charts.CTX_TUNING, MAX),
    (nd_charts.CTX_DROP_REASONS, SUM),
)
NO_REASONS_CHART = (
    "Netdata has no netdrops.drop_reasons chart, so drop reasons are not counted there (the collector counts them "
    "as root, or through the netdrops-reasons helper that `netdrops-collector install` sets up); the diagnosis "
    "falls back to the counters alone.")
STOCK_PLAN = (
    ("cpu.softnet_stat", SUM),
    ("net.drops", SUM),
    ("net.fifo", SUM),
    ("ipv4.udperrors", SUM),
    ("ipv6.udperrors", SUM),
    ("ip.tcp_accept_queue", SUM),
)
COMMON_PLAN = (
    ("cpu.cpu", AVERAGE),
    ("net.packets", SUM),
)
SYSTEM_SOFTNET = "system.softnet_stat"
# Netdata's per-CPU softnet charts (cpu.cpuN_softnet_stat, context cpu.softnet_stat) are off by
# default since v1.45 (on in 1.37). The option, from the proc plugin's source and checked on the
# real v2.11 (set, the per-CPU charts appear; unset, only system.softnet_stat):
PER_CPU_SOFTNET_SECTION = "[plugin:proc:/proc/net/softnet_stat]"
PER_CPU_SOFTNET_OPTION = "softnet_stat per core = yes"
NO_PER_CPU_NOTE = (
    "Netdata has no per-CPU softnet charts here (off by default since Netdata v1.45): totals only, no CPU "
    "can be named. To have them, add `{0}` under `{1}` in netdata.conf and restart Netdata.".format(
        PER_CPU_SOFTNET_OPTION, PER_CPU_SOFTNET_SECTION))
# ip.tcp_accept_queue's dimensions: ids are the kernel's TcpExt counter names, the names differ
# (overflows, drops). Seen on 1.37.1 and v2.11 alike; the chart appears once a counter moves.
LISTEN_OVERFLOWS, LISTEN_DROPS = "ListenOverflows", "ListenDrops"

CPU_IN_DIM = re.compile(r"^cpu(\d+)$")
CPU_IN_CHART = re.compile(r"\.cpu(\d+)(?:_softnet_stat)?$")


# Netdata's proc plugin charts these only once one of their counters is non-zero (its "auto"
# setting, the default in 1.37 and v2): on a host where nothing overflowed since the agent started,
# the chart is absent. A chart read from the same kernel file (key -> that chart) proves the agent
# reads the file, so the absent chart then counts 0, not "unknown".
CHARTED_ONCE_NONZERO = {
    "ipv4.udperrors": "ipv4.packets",       # /proc/net/snmp
    "ipv6.udperrors": "ipv6.packets",       # /proc/net/snmp6
    "ip.tcp_accept_queue": "system.ip",     # /proc/net/netstat (TcpExt and IpExt)
}


class NeverCounted:
    """In place of the window of a CHARTED_ONCE_NONZERO context that is absent while its file is
    read: every counter of it is 0 over the window."""
    columns = ()

    @staticmethod
    def by_chart():
        return {}


NEVER_COUNTED = NeverCounted()


def choose_mode(contexts):
    if nd_charts.CTX_SOFTNET_DROPPED in contexts:
        return SOURCE_NETDROPS
    if "cpu.softnet_stat" in contexts or SYSTEM_SOFTNET in contexts:
        return SOURCE_STOCK
    return None


def read_node(client, window_seconds, node_name=None):
    """All the answers one node's evidence needs: (info, mode, {context: Window}, labels, alarms, notes)."""
    info = client.info()
    contexts = client.contexts()
    mode = choose_mode(contexts)
    if mode is None:
        raise MissingEvidence("{0} has neither the netdrops charts nor its own softnet_stat "
                              "charts, so it holds no receive-path evidence.".format(client.who))
    plan = NETDROPS_PLAN if mode == SOURCE_NETDROPS else STOCK_PLAN
    plan = plan + COMMON_PLAN
    if mode == SOURCE_STOCK and "cpu.softnet_stat" not in contexts:
        plan = ((SYSTEM_SOFTNET, SUM),) + plan
    if mode == SOURCE_NETDROPS:
        plan = plan + (("ipv4.udperrors", SUM), ("ipv6.udperrors", SUM))
    windows, notes = {}, []
    for context, group in plan:
        if context not in contexts:
            if CHARTED_ONCE_NONZERO.get(context) in contexts:
                windows[context] = NEVER_COUNTED
            continue
        try:
            windows[context] = client.window(context, window_seconds, group)
        except NetdataHTTPError as err:
            if not is_no_metrics(err):
                raise
            notes.append("Netdata has no data for {0} in the last {1} s.".format(context, window_seconds))
    main = nd_charts.CTX_SOFTNET_DROPPED if mode == SOURCE_NETDROPS else (
        "cpu.softnet_stat" if "cpu.softnet_stat" in windows else SYSTEM_SOFTNET)
    if main not in windows or all(c.value is None for c in windows[main].columns):
        raise MissingEvidence("{0} has no {1} data in the last {2} s (is its collector "
                              "running, or the node connected?).".format(client.who, main, window_seconds))
    label_context = nd_charts.CTX_IFACE_DROPS if mode == SOURCE_NETDROPS else "net.drops"
    labels = client.chart_labels(label_context) if label_context in contexts else {}
    try:
        alarms = client.alarms()
    except NetdataHTTPError as err:
        alarms = []
        notes.append("Could not read the active alarms ({0}).".format(err))
    return info, mode, windows, labels, alarms, notes


# Alarms worth showing beside a receive-path diagnosis (chart id prefixes, words in the name).
ALARM_CHARTS = ("netdrops", "system.softnet_stat", "cpu.cpu", "net_drops.", "net_packets.", "net_fifo.",
                "net.", "ipv4.udperrors", "ipv6.udperrors", "ip.tcp_accept_queue", "ipv4.tcplistenissues")
ALARM_WORDS = ("softnet", "backlog", "drop", "squeeze", "udp", "listen", "fifo", "netdrops")


def relevant_alarm(alarm):
    name, chart = (alarm.name or "").lower(), (alarm.chart or "").lower()
    return chart.startswith(ALARM_CHARTS) or any(word in name for word in ALARM_WORDS)


def _count(value, window):
    """A group=sum value (sum of per-second rates) -> events over the window."""
    return None if value is None else value * window.update_every


def _cpu_of_dim(name):
    m = CPU_IN_DIM.match(name)
    return int(m.group(1)) if m else None


def _first_chart(window):
    """The values of one chart of a per-host context (several jobs would give several)."""
    charts = window.by_chart()
    return charts[sorted(charts)[0]] if charts else {}


def _device_of(chart_id, prefix):
    """'net_drops.eth0' -> 'eth0'."""
    _type, _dot, rest = chart_id.partition(".")
    return rest[len(prefix):] if rest.startswith(prefix) else rest


def build_evidence(node, url, info, mode, windows, labels, alarms, notes):
    """The answers of read_node() -> Evidence (pure): the adapter to the model, then the one
    evidence builder."""
    window, utilisation, notes = window_from_answers(mode, windows, labels, notes)
    counted = window.reasons is not None
    if mode == SOURCE_NETDROPS and not counted:
        notes.append(NO_REASONS_CHART)
    detail = "Netdata {0} at {1}{2}, {3}".format(
        info.version, url, " (node {0})".format(node) if node != info.hostname or len(info.mirrored_hosts) > 1 else "",
        ("netdrops charts" + (" with the kernel's drop reasons" if counted else "")) if mode == SOURCE_NETDROPS
        else "Netdata's own charts (the netdrops collector is not installed there)")
    return from_window(
        window, node, mode, detail, utilisation=utilisation, url=url, netdata_version=info.version,
        tuning_source="netdata" if nd_charts.CTX_TUNING in windows else None,
        alarms=[Alarm(a.name, a.chart, a.status, a.value, a.units, a.info) for a in alarms if relevant_alarm(a)],
        notes=notes, reasons_source="netdata" if counted else None,
        reasons_note=None if counted else (NO_REASONS_CHART if mode == SOURCE_NETDROPS else
                                           "Netdata's own charts have no drop reasons."))


def main_context(mode, windows):
    """The context whose window is the evidence's window (read_node() made sure it is there)."""
    if mode == SOURCE_NETDROPS:
        return nd_charts.CTX_SOFTNET_DROPPED
    return "cpu.softnet_stat" if "cpu.softnet_stat" in windows else SYSTEM_SOFTNET


def window_from_answers(mode, windows, labels, notes=()):
    """Netdata's answers ({context: netdata_api Window}, chart labels) -> (model.Window,
    {cpu: (busy %, softirq %)}, notes) (pure). Counts are the sums of per-second rates over
    the window; None where the charts do not say."""
    main = windows[main_context(mode, windows)]
    notes = list(notes)
    cpus = _cpus(mode, windows, notes)
    tuning, rps_interfaces = {}, None
    if nd_charts.CTX_TUNING in windows:
        for col in windows[nd_charts.CTX_TUNING].columns:
            if col.dim_name in TUNING_KEYS and col.latest is not None:
                tuning[col.dim_name] = int(col.latest)
            elif col.dim_name == "rps_interfaces" and col.latest is not None:
                rps_interfaces = int(col.latest)
    reasons = None
    if nd_charts.CTX_DROP_REASONS in windows:
        # a reason's dimension appears when it first counts: one not there counted 0 (diagnosis._reason)
        w = windows[nd_charts.CTX_DROP_REASONS]
        reasons = {name: _count(v, w) or 0.0 for name, v in _first_chart(w).items()}
    drops_by_kind = None
    if nd_charts.CTX_DROPS_BY_KIND in windows:
        w = windows[nd_charts.CTX_DROPS_BY_KIND]
        drops_by_kind = {k: _count(v, w) or 0.0 for k, v in _first_chart(w).items()}
    window = model.Window(
        float(main.seconds), max(main.after, main.first_entry or 0), main.before,
        cpus=[cpus[k] for k in sorted(cpus)], interfaces=_interfaces(mode, windows, labels),
        drops_by_kind=drops_by_kind, sockets=_sockets(mode, windows), tuning=tuning,
        rps_interfaces=rps_interfaces, cpu_ids_guessed=(mode == SOURCE_STOCK), reasons=reasons)
    return window, _utilisation(windows, cpus), notes


def _cpus(mode, windows, notes):
    """{cpu id: model.CpuCounts} from the softnet charts (-1: all CPUs, when Netdata has no
    per-CPU charts); what the reader should know about the CPU numbers goes to `notes`."""
    main_ctx = main_context(mode, windows)
    main = windows[main_ctx]
    cpus = {}

    def cpu(cpu_id):
        if cpu_id not in cpus:
            cpus[cpu_id] = model.CpuCounts(cpu_id)
        return cpus[cpu_id]

    if mode == SOURCE_NETDROPS:
        for ctx, attr in ((nd_charts.CTX_SOFTNET_DROPPED, "dropped"), (nd_charts.CTX_SOFTNET_SQUEEZE, "squeezed"),
                          (nd_charts.CTX_SOFTNET_PROCESSED, "processed")):
            if ctx in windows:
                for name, value in _first_chart(windows[ctx]).items():
                    cpu_id = _cpu_of_dim(name)
                    if cpu_id is not None:
                        setattr(cpu(cpu_id), attr, _count(value, windows[ctx]) or 0.0)
        if nd_charts.CTX_BACKLOG_FILL in windows:
            # the chart publishes the share (its peak over the window), not the length
            for name, value in _first_chart(windows[nd_charts.CTX_BACKLOG_FILL]).items():
                cpu_id = _cpu_of_dim(name)
                if cpu_id is not None and value is not None:
                    cpu(cpu_id).backlog_peak_pct = value
        if len(main.by_chart()) > 1:
            notes.append("Several netdrops jobs publish {0}; the advisor reads {1}.".format(
                main_ctx, sorted(main.by_chart())[0]))
    elif main_ctx == "cpu.softnet_stat":
        for chart_id, dims in main.by_chart().items():
            m = CPU_IN_CHART.search(chart_id)
            if not m:
                continue
            c = cpu(int(m.group(1)))
            c.processed = _count(dims.get("processed"), main) or 0.0
            c.dropped = _count(dims.get("dropped"), main) or 0.0
            c.squeezed = _count(dims.get("squeezed"), main) or 0.0
            c.rps_ipis = _count(dims.get("received_rps"), main)
            c.flow_limit = _count(dims.get("flow_limit_count"), main)
        notes.append("CPU numbers are the row numbers of Netdata's own softnet_stat charts, which are "
                     "the CPU ids unless a CPU is offline.")
    else:
        dims = _first_chart(main)
        c = cpu(-1)  # -1: all CPUs together
        c.processed = _count(dims.get("processed"), main) or 0.0
        c.dropped = _count(dims.get("dropped"), main) or 0.0
        c.squeezed = _count(dims.get("squeezed"), main) or 0.0
        c.flow_limit = _count(dims.get("flow_limit_count"), main)
        notes.append(NO_PER_CPU_NOTE)
    return cpus


# cpu.cpu's dimensions that are not time receive processing competes with: nice time (softirq
# preempts it, ksoftirqd outweighs it; Netdata charts guest_nice apart from nice) and iowait
# (idle time with I/O outstanding). procstat.py says the same for /proc/stat.
NOT_COMPETING = ("nice", "guest_nice", "iowait")


def _utilisation(windows, cpus):
    """{cpu: (busy %, softirq %, nice %)} from cpu.cpu, for the CPUs the softnet charts named."""
    out = {}
    for chart_id, dims in (windows["cpu.cpu"].by_chart().items() if "cpu.cpu" in windows else ()):
        m = CPU_IN_CHART.search(chart_id)
        if m and int(m.group(1)) in cpus:
            values = [v for k, v in dims.items() if v is not None and k not in NOT_COMPETING]
            nice = [v for k, v in dims.items() if v is not None and k in NOT_COMPETING[:2]]
            out[int(m.group(1))] = (min(100.0, sum(values)) if values else None, dims.get("softirq"),
                                    sum(nice) if nice else None)
    return out


def _interfaces(mode, windows, labels):
    found = {}

    def iface(name, **kw):
        if name not in found:
            found[name] = model.IfaceCounts(name, **kw)
        return found[name]

    if mode == SOURCE_NETDROPS:
        drops = windows.get(nd_charts.CTX_IFACE_DROPS)
        if drops:
            for chart_id, dims in drops.by_chart().items():
                lab = labels.get(chart_id, {})
                name = lab.get("device") or _device_of(chart_id, "iface_")[:-len("_drops")]
                i = iface(name, kind=lab.get("kind", "other"), role=lab.get("role"), kind_source="netdrops",
                          peer=lab.get("peer"), container=lab.get("container"))
                i.inbound = _count(dims.get("inbound"), drops) or 0.0
                i.outbound = _count(dims.get("outbound"), drops) or 0.0
        loss = windows.get(nd_charts.CTX_IFACE_NIC_LOSS)
        if loss:
            for chart_id, dims in loss.by_chart().items():
                lab = labels.get(chart_id[:-len("_nic_loss")] + "_drops", {})
                name = lab.get("device") or _device_of(chart_id, "iface_")[:-len("_nic_loss")]
                i = iface(name, kind=lab.get("kind", "physical"), role=lab.get("role"), kind_source="netdrops")
                i.missed = _count(dims.get("missed"), loss) or 0.0
                i.fifo = _count(dims.get("fifo"), loss) or 0.0
    else:
        drops = windows.get("net.drops")
        if drops:
            for chart_id, dims in drops.by_chart().items():
                name = labels.get(chart_id, {}).get("device") or _device_of(chart_id, "")
                itype = labels.get(chart_id, {}).get("interface_type")
                i = iface(name, kind=guess_kind(name, itype), kind_source="name")
                i.inbound = _count(dims.get("inbound"), drops) or 0.0
                i.outbound = _count(dims.get("outbound"), drops) or 0.0
        fifo = windows.get("net.fifo")
        if fifo:
            for chart_id, dims in fifo.by_chart().items():
                name = _device_of(chart_id, "")
                i = iface(name, kind=guess_kind(name), kind_source="name")
                i.fifo = _count(dims.get("receive"), fifo) or 0.0
    packets = windows.get("net.packets")
    if packets:
        for chart_id, dims in packets.by_chart().items():
            name = _device_of(chart_id, "")
            rx = _count(dims.get("received"), packets)
            if name in found:
                found[name].received = rx
            elif rx:
                iface(name, kind=guess_kind(name), kind_source="name").received = rx
    return sorted(found.values(), key=lambda i: i.name)


# Netdata's own charts of snmp.SOCKET_KEYS' counters: key -> (context, dimension id) pairs summed.
# Dimension ids are the kernel's counter names (the names may differ: ip.tcp_accept_queue's
# ListenOverflows is named `overflows`).
STOCK_SOCKETS = {
    "udp_rcvbuf_errors": (("ipv4.udperrors", "RcvbufErrors"), ("ipv6.udperrors", "RcvbufErrors")),
    "udp_in_errors": (("ipv4.udperrors", "InErrors"), ("ipv6.udperrors", "InErrors")),
    "udp_sndbuf_errors": (("ipv4.udperrors", "SndbufErrors"), ("ipv6.udperrors", "SndbufErrors")),
    "tcp_listen_drops": (("ip.tcp_accept_queue", LISTEN_DROPS),),
    "tcp_listen_overflows": (("ip.tcp_accept_queue", LISTEN_OVERFLOWS),),
}


def _sockets(mode, windows):
    """{SOCKET_KEYS key: count or None}: from netdrops.socket_drops, and from Netdata's own charts
    for what that chart does not have (no netdrops charts, or a netdrops that charted fewer)."""
    def dim(ctx, dim_id):
        w = windows.get(ctx)
        if w is NEVER_COUNTED:
            return 0.0
        if not w:
            return None
        values = [_count(c.value, w) for c in w.columns if c.dim_id == dim_id and c.value is not None]
        return sum(values) if values else None

    sockets = dict.fromkeys(SOCKET_KEYS)
    w = windows.get(nd_charts.CTX_SOCKET_DROPS) if mode == SOURCE_NETDROPS else None
    if w:
        for name, value in _first_chart(w).items():
            if name in sockets:
                sockets[name] = _count(value, w) or 0.0
    for key, places in STOCK_SOCKETS.items():
        if sockets[key] is None:
            known = [v for v in (dim(ctx, dim_id) for ctx, dim_id in places) if v is not None]
            sockets[key] = sum(known) if known else None
    return sockets
