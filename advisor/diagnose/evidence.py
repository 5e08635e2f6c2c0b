"""What the diagnosis reads: one node's receive-path counters over one window, whichever source
they came from (netdrops charts, Netdata's own charts, or the kernel sampled directly).

Counters are counts over the window (float: Netdata's sums of per-second rates are not whole);
None means the source cannot tell, which the diagnosis keeps apart from zero.

Every source gives its counts as one netdrops_collector.model.Window (the kernel sampler and
the Function as the difference of two of the core's snapshots, a Netdata agent through
netdata_source's adapter); from_window() is the one place that turns a Window into Evidence.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from netdrops_collector.kernel import snmp, tuning
from netdrops_collector.model import ByCpuAndName

SOURCE_NETDROPS = "netdata"          # Netdata with the netdrops.* charts
SOURCE_STOCK = "netdata-stock"       # Netdata's own softnet/interface charts only
SOURCE_KERNEL = "kernel"             # /proc and /sys sampled by the advisor itself

SOCKET_KEYS = snmp.SOCKET_KEYS       # owned by the collector's snmp module
TUNING_KEYS = tuning.ADVISOR_KEYS     # owned by the collector's tuning module, which says why these


@dataclass
class CpuEvidence:
    cpu: int
    processed: Optional[float] = None
    dropped: Optional[float] = None
    squeezed: Optional[float] = None
    rps_ipis: Optional[float] = None
    flow_limit: Optional[float] = None
    backlog_peak_pct: Optional[float] = None   # peak backlog length, % of netdev_max_backlog
    # time receive processing competes with (user, system, irq, softirq, steal), average over the
    # window; nice time is left out: softirq preempts it and ksoftirqd outweighs a nice task
    busy_pct: Optional[float] = None
    softirq_pct: Optional[float] = None
    nice_pct: Optional[float] = None           # time at nice > 0 (not in busy_pct)


@dataclass
class IfaceEvidence:
    name: str
    kind: str = "other"           # physical, veth, bridge, bond, vlan, tun, other
    role: Optional[str] = None    # kind refined: bond-slave, wifi, loopback
    kind_source: str = "netdrops"  # netdrops, netlink, sysfs, or name (a guess from the name alone)
    peer: Optional[str] = None
    container: Optional[str] = None
    rx_packets: Optional[float] = None
    inbound_drops: Optional[float] = None
    outbound_drops: Optional[float] = None
    missed: Optional[float] = None
    fifo: Optional[float] = None
    rx_queues: Optional[int] = None
    rps_masks: Optional[List[str]] = None   # per RX queue, as the kernel shows them
    rps_flow_cnt: Optional[List[int]] = None
    numa_cpus: Optional[List[int]] = None   # CPUs of the NIC's NUMA node, when it has one

    @property
    def rps_on(self):
        if self.rps_masks is None:
            return None
        return any(int(m.replace(",", "") or "0", 16) for m in self.rps_masks)


@dataclass
class SocketDrop:
    """One UDP socket that dropped datagrams (local evidence only)."""
    proto: str
    address: str
    port: int
    drops: int
    since: str                  # "window" (counted over it) or "open" (since the socket opened)
    rx_queue: int = 0           # bytes waiting to be read when last looked at
    inode: int = 0
    owners: List[str] = field(default_factory=list)   # 'comm[pid]'


@dataclass
class ReasonSample:
    """A short look at the skb:kfree_skb records of some drop reasons (sources/trace_sample.py):
    which ethertypes, dropping functions and closed ports the drops had. Local evidence only."""
    reasons: List[str]                       # the reasons sampled, lowercase kernel names
    seconds: float = 0.0                     # how long it looked
    records: int = 0                         # kfree_skb records read
    limit: int = 0                           # it stops at this many records
    by_reason: Dict[str, int] = field(default_factory=dict)      # records per reason
    protocols: Dict[str, Dict[str, int]] = field(default_factory=dict)   # reason -> {"0x88cc": n}
    locations: Dict[str, Dict[str, int]] = field(default_factory=dict)   # reason -> {function: n}
    ports: Dict[str, int] = field(default_factory=dict)          # "udp/47901" -> replies seen (closed ports)
    note: Optional[str] = None               # why there is no sample, or what limits it


@dataclass
class HostFacts:
    """What the machine running the advisor can say about itself (local evidence only)."""
    local: bool = False
    is_root: Optional[bool] = None
    online_cpus: Optional[List[int]] = None
    isolated_cpus: List[int] = field(default_factory=list)
    hz: Optional[int] = None
    init_netns: Optional[bool] = None          # net.core backlog/budget sysctls exist only there
    unprivileged_userns: Optional[bool] = None
    proc_sys_read_only: Optional[bool] = None

    @property
    def in_container(self):
        """Inside a container that cannot change the host's settings."""
        return bool(self.local and (self.init_netns is False or self.unprivileged_userns))

    @property
    def usable_cpus(self):
        if self.online_cpus is None:
            return None
        isolated = set(self.isolated_cpus)
        return [c for c in self.online_cpus if c not in isolated]


@dataclass
class Alarm:
    name: str
    chart: Optional[str]
    status: str
    value: Optional[float]
    units: Optional[str]
    info: Optional[str]


@dataclass
class Evidence(ByCpuAndName):
    node: str
    source: str
    source_detail: str               # one sentence: where the numbers came from
    window_seconds: float
    start_time: int                  # unix time, the window's first second
    end_time: int
    url: Optional[str] = None
    netdata_version: Optional[str] = None
    cpus: List[CpuEvidence] = field(default_factory=list)
    cpu_ids_are_rows: bool = False   # ids are softnet_stat row numbers, not CPU ids
    interfaces: List[IfaceEvidence] = field(default_factory=list)
    drops_by_kind: Optional[Dict[str, float]] = None
    sockets: Dict[str, Optional[float]] = field(default_factory=lambda: dict.fromkeys(SOCKET_KEYS))
    # ints, except rps_default_mask (hex text); None where unknown
    tuning: Dict[str, Any] = field(default_factory=lambda: dict.fromkeys(TUNING_KEYS))
    udp_socket_drops: List[SocketDrop] = field(default_factory=list)
    tuning_source: Optional[str] = None   # kernel or netdata
    rps_interfaces: Optional[int] = None  # how many interfaces have RPS on (from netdrops.tuning)
    host: HostFacts = field(default_factory=HostFacts)
    alarms: List[Alarm] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    requests: int = 0                # Netdata requests made for this node
    # the kernel's drop reasons over the window: {lowercase name: drops}, "other" the rest of all
    # drops; a reason the source has not seen counts 0. None: not counted (reasons_note says why)
    reasons: Optional[Dict[str, float]] = None
    reasons_source: Optional[str] = None  # "netdata" (the netdrops.drop_reasons chart) or "kernel" (counted live)
    reasons_note: Optional[str] = None
    reason_samples: List[ReasonSample] = field(default_factory=list)

    def rate(self, count):
        """Count over the window -> per second; None stays None."""
        if count is None:
            return None
        return count / self.window_seconds if self.window_seconds > 0 else 0.0

    def total(self, attr):
        """Sum of one CPU counter over all CPUs; None when no CPU has it."""
        values = [getattr(c, attr) for c in self.cpus if getattr(c, attr) is not None]
        return sum(values) if values else None


    def to_dict(self):
        doc = dataclasses.asdict(self)
        for iface, raw in zip(self.interfaces, doc["interfaces"]):
            raw["rps_on"] = iface.rps_on
        doc["host"]["in_container"] = self.host.in_container
        return doc


def guess_kind(name, interface_type=None):
    """The kind of an interface from its name alone, for remote nodes without netdrops
    (Netdata's own charts only say 'real' or 'virtual')."""
    patterns = (
        (r"^(veth|vnet|cali|lxc|vmbr\d+v|fwpr|fwln)", "veth"),
        (r"^(tap|tun|fwtap)", "tun"),
        (r"^(br|docker\d|virbr|vmbr|lxcbr|cni|fwbr|kube-bridge|podman)", "bridge"),
        (r"^(bond|team)", "bond"),
        (r"\.\d+$|^vlan", "vlan"),
    )
    for pattern, kind in patterns:
        if re.search(pattern, name):
            return kind
    return "physical" if interface_type == "real" else "other"


def _count(value):
    return None if value is None else float(value)


def backlog_share(cpu, backlog_max):
    """A window's CPU -> its peak backlog length as a % of netdev_max_backlog (None: never seen,
    or the limit unknown); a source that published the share itself gives it as it is."""
    if cpu.backlog_peak_pct is not None:
        return cpu.backlog_peak_pct
    if cpu.backlog_peak is None or not backlog_max:
        return None
    return 100.0 * cpu.backlog_peak / backlog_max


def from_window(window, node, source, source_detail, utilisation=None, **fields):
    """model.Window -> Evidence (pure). `utilisation` is {cpu: (busy %, softirq %, nice %)} where
    the source has it (busy without nice, see CpuEvidence); `fields` are the other Evidence fields the source knows (url, alarms, notes,
    tuning_source, udp_socket_drops, host ...)."""
    utilisation = utilisation or {}
    backlog_max = window.tuning.get("netdev_max_backlog")
    cpus = []
    for c in window.cpus:
        busy, softirq, nice = (tuple(utilisation.get(c.cpu, ())) + (None, None, None))[:3]
        cpus.append(CpuEvidence(
            cpu=c.cpu, processed=_count(c.processed), dropped=_count(c.dropped), squeezed=_count(c.squeezed),
            rps_ipis=_count(c.rps_ipis), flow_limit=_count(c.flow_limit),
            backlog_peak_pct=backlog_share(c, backlog_max), busy_pct=busy, softirq_pct=softirq,
            nice_pct=nice))
    interfaces = [IfaceEvidence(
        name=i.name, kind=i.kind, role=i.role, kind_source=i.kind_source, peer=i.peer, container=i.container,
        rx_packets=_count(i.received), inbound_drops=_count(i.inbound), outbound_drops=_count(i.outbound),
        missed=_count(i.missed), fifo=_count(i.fifo)) for i in window.interfaces]
    by_kind = window.drops_by_kind
    reasons = getattr(window, "reasons", None)
    if reasons is not None:
        fields.setdefault("reasons", {name: float(count) for name, count in reasons.items()})
    return Evidence(
        node=node, source=source, source_detail=source_detail, window_seconds=float(window.seconds),
        start_time=window.start_time, end_time=window.end_time, cpus=cpus,
        cpu_ids_are_rows=window.cpu_ids_guessed, interfaces=interfaces,
        drops_by_kind={k: float(v) for k, v in by_kind.items()} if by_kind is not None else None,
        sockets={key: _count(window.sockets.get(key)) for key in SOCKET_KEYS},
        tuning={key: window.tuning.get(key) for key in TUNING_KEYS},
        rps_interfaces=window.rps_interfaces, **fields)
