"""What the diagnosis reads: one node's receive-path counters over one window, whichever source
they came from (netdrops charts, Netdata's own charts, or the kernel sampled directly).

Counters are counts over the window (float: Netdata's sums of per-second rates are not whole);
None means the source cannot tell, which the diagnosis keeps apart from zero.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SOURCE_NETDROPS = "netdata"          # Netdata with the netdrops.* charts
SOURCE_STOCK = "netdata-stock"       # Netdata's own softnet/interface charts only
SOURCE_KERNEL = "kernel"             # /proc and /sys sampled by the advisor itself

SOCKET_KEYS = ("udp_rcvbuf_errors", "udp_in_errors", "udp_sndbuf_errors",
               "tcp_listen_drops", "tcp_listen_overflows")

TUNING_KEYS = ("netdev_max_backlog", "netdev_budget", "netdev_budget_usecs", "rmem_default",
               "rmem_max", "wmem_default", "wmem_max", "rps_sock_flow_entries", "rps_default_mask")


@dataclass
class CpuEvidence:
    cpu: int
    processed: Optional[float] = None
    dropped: Optional[float] = None
    squeezed: Optional[float] = None
    rps_ipis: Optional[float] = None
    flow_limit: Optional[float] = None
    backlog_peak_pct: Optional[float] = None   # peak backlog length, % of netdev_max_backlog
    busy_pct: Optional[float] = None           # all non-idle time, average over the window
    softirq_pct: Optional[float] = None


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
class Evidence:
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

    def rate(self, count):
        """Count over the window -> per second; None stays None."""
        if count is None:
            return None
        return count / self.window_seconds if self.window_seconds > 0 else 0.0

    def total(self, attr):
        """Sum of one CPU counter over all CPUs; None when no CPU has it."""
        values = [getattr(c, attr) for c in self.cpus if getattr(c, attr) is not None]
        return sum(values) if values else None

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
