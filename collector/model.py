"""One model of a measurement: what the core read at one moment, and what it counted between two.

A Snapshot is the core's state after a tick, as running totals (wrap-safe, counted since the
collector started): per CPU softnet counters and the backlog length (a gauge), per charted
interface its counters with kind, role, peer, container and master, drops by kind, socket
counters, the tuning in force. `Collector.snapshot()` builds one on demand, never inside the
tick. A Window is the difference of two snapshots: counts over the window, with its seconds and
start/end time. `reasons` holds the kernel's drop reasons (skb:kfree_skb) counted in the kernel:
{reason name lowercased: total}, with "other" the rest of all drops; None when the collector
cannot count them (no tracefs, no privilege, a kernel without reasons). Front-ends render their dimensions from the declared charts; the advisor reads
snapshots and windows, never dimension ids.

A Window is also what the advisor makes of a Netdata agent's answers (advisor/sources/netdata_source.py):
there counts are floats (sums of per-second rates) and None means "the source cannot tell".
"""


class CpuSnapshot:
    """One CPU's softnet counters (running totals) and its backlog length now (None before 5.10)."""
    __slots__ = ("cpu", "processed", "dropped", "squeezed", "rps_ipis", "flow_limit", "backlog_len")

    def __init__(self, cpu, processed, dropped, squeezed, rps_ipis=None, flow_limit=None, backlog_len=None):
        self.cpu = cpu
        self.processed = processed
        self.dropped = dropped
        self.squeezed = squeezed
        self.rps_ipis = rps_ipis        # None: the kernel does not print it (before 2.6.35)
        self.flow_limit = flow_limit    # None: before 3.11
        self.backlog_len = backlog_len  # a gauge: packets queued, not a share


IFACE_COUNTERS = ("received", "inbound", "outbound", "missed", "fifo")


class IfaceSnapshot:
    """One interface with charts of its own. `inbound` is rx_dropped + rx_missed_errors, as the
    core counts it; `missed` is the rx_missed_errors part. `key` is the core's identity of the
    interface (an index, not the name: a re-created veth keeps its name, not its key)."""
    __slots__ = ("key", "name", "kind", "role", "peer", "container", "master") + IFACE_COUNTERS

    def __init__(self, key, name, kind="other", role=None, peer=None, container=None, master=None,
                 received=0, inbound=0, outbound=0, missed=0, fifo=0):
        self.key = key
        self.name = name
        self.kind = kind
        self.role = role
        self.peer = peer
        self.container = container
        self.master = master
        self.received = received
        self.inbound = inbound
        self.outbound = outbound
        self.missed = missed
        self.fifo = fifo


class Snapshot:
    __slots__ = ("monotonic", "wall", "cpus", "interfaces", "drops_by_kind", "sockets", "sockets_missing",
                 "tuning", "rps_interfaces", "cpu_ids_guessed", "reasons")

    def __init__(self, monotonic, wall, cpus, interfaces, drops_by_kind, sockets, tuning,
                 rps_interfaces=None, cpu_ids_guessed=False, sockets_missing=False, reasons=None):
        self.monotonic = monotonic
        self.wall = wall
        self.cpus = cpus                    # [CpuSnapshot], by CPU id
        self.interfaces = interfaces        # [IfaceSnapshot]
        self.drops_by_kind = drops_by_kind  # {kind: inbound drops}
        # {snmp.SOCKET_KEYS key: total}; a key the kernel lacks is absent. While /proc/net/snmp
        # is missing (sockets_missing) the totals stand still.
        self.sockets = sockets
        self.sockets_missing = sockets_missing
        self.tuning = tuning                # {tuning.SYSCTL_KEYS key: value or None}, as last read
        self.rps_interfaces = rps_interfaces
        self.cpu_ids_guessed = cpu_ids_guessed  # CPU ids are softnet_stat row numbers
        self.reasons = reasons              # {reason: total drops} or None: not counted


class CpuCounts:
    """One CPU over a window: counts, and the highest backlog length seen (a length, None when
    never seen), or, from a source that publishes only the share, the highest share in %."""
    __slots__ = ("cpu", "processed", "dropped", "squeezed", "rps_ipis", "flow_limit", "backlog_peak",
                 "backlog_peak_pct")

    def __init__(self, cpu, processed=None, dropped=None, squeezed=None, rps_ipis=None, flow_limit=None,
                 backlog_peak=None, backlog_peak_pct=None):
        self.cpu = cpu                  # -1: all CPUs together (a source without per-CPU counters)
        self.processed = processed
        self.dropped = dropped
        self.squeezed = squeezed
        self.rps_ipis = rps_ipis
        self.flow_limit = flow_limit
        self.backlog_peak = backlog_peak
        self.backlog_peak_pct = backlog_peak_pct


class IfaceCounts:
    """One interface over a window (counters None where the source cannot tell)."""
    __slots__ = ("name", "kind", "role", "kind_source", "peer", "container", "master") + IFACE_COUNTERS

    def __init__(self, name, kind="other", role=None, kind_source="netdrops", peer=None, container=None,
                 master=None, received=None, inbound=None, outbound=None, missed=None, fifo=None):
        self.name = name
        self.kind = kind
        self.role = role
        self.kind_source = kind_source   # netdrops, or name (a guess from the name alone)
        self.peer = peer
        self.container = container
        self.master = master
        self.received = received
        self.inbound = inbound
        self.outbound = outbound
        self.missed = missed
        self.fifo = fifo


class ByCpuAndName:
    """cpu(id) and iface(name) over `cpus` and `interfaces`: for a Window, and for the advisor's
    Evidence, which holds the same two lists."""
    __slots__ = ()

    def cpu(self, cpu_id):
        for cpu in self.cpus:
            if cpu.cpu == cpu_id:
                return cpu
        return None

    def iface(self, name):
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        return None


class Window(ByCpuAndName):
    __slots__ = ("seconds", "start_time", "end_time", "cpus", "interfaces", "drops_by_kind", "sockets",
                 "tuning", "rps_interfaces", "cpu_ids_guessed", "reasons")

    def __init__(self, seconds, start_time, end_time, cpus=None, interfaces=None, drops_by_kind=None,
                 sockets=None, tuning=None, rps_interfaces=None, cpu_ids_guessed=False, reasons=None):
        self.seconds = seconds
        self.start_time = start_time        # unix time (int)
        self.end_time = end_time
        self.cpus = cpus or []              # [CpuCounts], by CPU id
        self.interfaces = interfaces or []  # [IfaceCounts], by name
        self.drops_by_kind = drops_by_kind  # {kind: count} or None
        self.sockets = sockets or {}        # {key: count or None}
        self.tuning = tuning or {}          # {key: value or None}, as at the window's end
        self.rps_interfaces = rps_interfaces
        self.cpu_ids_guessed = cpu_ids_guessed
        # {reason: drops} (every reason counted, "other" among them) or None: not counted.
        self.reasons = reasons


def _minus(last, first):
    return None if last is None or first is None else last - first


def delta(first, last, backlog_peaks=None):
    """Window from two snapshots of one collector. Only what is in `last` is counted: a CPU or
    interface that appeared in between counts from 0 (as the core does, so its totals are
    all in the window); one gone by `last` is left out. `backlog_peaks` ({cpu: length}) adds
    backlog lengths seen between the two; the peak is the highest of those and of both ends."""
    peaks = backlog_peaks or {}
    before = {c.cpu: c for c in first.cpus}
    cpus = []
    for cur in last.cpus:
        old = before.get(cur.cpu)
        seen = [v for v in (cur.backlog_len, old.backlog_len if old else None, peaks.get(cur.cpu))
                if v is not None]
        if old is None:
            old = CpuSnapshot(cur.cpu, 0, 0, 0, 0, 0)
        cpus.append(CpuCounts(
            cur.cpu, cur.processed - old.processed, cur.dropped - old.dropped, cur.squeezed - old.squeezed,
            _minus(cur.rps_ipis, old.rps_ipis), _minus(cur.flow_limit, old.flow_limit),
            backlog_peak=max(seen) if seen else None))
    earlier = {i.key: i for i in first.interfaces}
    interfaces = []
    for cur in last.interfaces:
        old = earlier.get(cur.key)
        counts = {name: getattr(cur, name) - (getattr(old, name) if old is not None else 0)
                  for name in IFACE_COUNTERS}
        interfaces.append(IfaceCounts(cur.name, cur.kind, cur.role, "netdrops", cur.peer, cur.container,
                                      cur.master, **counts))
    interfaces.sort(key=lambda i: i.name)
    by_kind = {kind: total - first.drops_by_kind.get(kind, 0) for kind, total in last.drops_by_kind.items()}
    # A counter the core made since `first` (a kernel file back) counts from 0; while the file
    # is missing at the end the source cannot tell.
    sockets = {key: None if last.sockets_missing else total - first.sockets.get(key, 0)
               for key, total in last.sockets.items()}
    # Reasons count only when both ends counted them: counters opened mid-way would claim the
    # whole window for part of it.
    reasons = None
    if first.reasons is not None and last.reasons is not None:
        reasons = {name: total - first.reasons.get(name, 0) for name, total in last.reasons.items()}
    seconds = last.monotonic - first.monotonic
    return Window(seconds, int(first.wall), int(first.wall + seconds), sorted(cpus, key=lambda c: c.cpu),
                  interfaces, by_kind, sockets, dict(last.tuning), last.rps_interfaces,
                  first.cpu_ids_guessed or last.cpu_ids_guessed, reasons)
