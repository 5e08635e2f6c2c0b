"""Every chart netdrops publishes, declared once; the python.d module, the external plugin and
the tests all read these definitions.

Rates are published as running totals with the `incremental` algorithm (Netdata turns them into
per-second rates); the totals are kept wrap-safe by counters.MonotonicCounter. Percentages and
gauges are `absolute`, scaled by PRECISION because Netdata takes integers.

Dimension ids are unique across the whole job (python.d looks values up in one flat dict), so a
dimension's id is "<chart id>_<name>" and its name is what users see: `cpu3`, `inbound`.
"""

import re

from .kernel import dropreasons, snmp, tuning

PRECISION = 1000

# Contexts: a contract with health.d and the advisor.
CTX_BACKLOG_FILL = "netdrops.softnet_backlog_fill"
CTX_SOFTNET_DROPPED = "netdrops.softnet_dropped"
CTX_SOFTNET_SQUEEZE = "netdrops.softnet_squeeze"
CTX_SOFTNET_PROCESSED = "netdrops.softnet_processed"
CTX_SOFTNET_FLOW_LIMIT = "netdrops.softnet_flow_limit"
CTX_DROPS_BY_KIND = "netdrops.drops_by_kind"
CTX_IFACE_DROPS = "netdrops.iface_drops"
CTX_IFACE_DROP_RATIO = "netdrops.iface_drop_ratio"
CTX_IFACE_NIC_LOSS = "netdrops.iface_nic_loss"
CTX_IFACE_PACKETS = "netdrops.iface_packets"
CTX_SOCKET_DROPS = "netdrops.socket_drops"
CTX_TUNING = "netdrops.tuning"
CTX_DROP_REASONS = "netdrops.drop_reasons"

PRIORITY_BASE = 70000


class Dim:
    __slots__ = ("id", "name", "algorithm", "multiplier", "divisor", "source")

    def __init__(self, chart_id, name, algorithm="incremental", multiplier=1, divisor=1, source=None):
        self.id = "{0}_{1}".format(chart_id, name)
        self.name = name
        self.algorithm = algorithm
        self.multiplier = multiplier
        self.divisor = divisor
        self.source = source or name  # per-interface dims: the running total they show


class Chart:
    __slots__ = ("id", "title", "units", "family", "context", "chart_type", "priority", "dims", "labels")

    def __init__(self, chart_id, title, units, family, context, chart_type, priority, labels=None):
        self.id = chart_id
        self.title = title
        self.units = units
        self.family = family
        self.context = context
        self.chart_type = chart_type
        self.priority = priority
        self.dims = []
        self.labels = labels or {}

    def add_dim(self, name, **kwargs):
        dim = Dim(self.id, name, **kwargs)
        self.dims.append(dim)
        return dim


# Charts with a `total` dimension are lines: stacked, the total would be drawn twice.

def host_charts():
    """The per-host charts, in dashboard order. Per-CPU dimensions are added as CPUs are seen."""
    p = PRIORITY_BASE
    charts = [
        Chart("softnet_dropped", "Packets dropped because the CPU backlog queue was full",
              "packets/s", "softnet", CTX_SOFTNET_DROPPED, "line", p + 1),
        Chart("softnet_backlog_fill", "Backlog queue length as a share of net.core.netdev_max_backlog",
              "percentage", "softnet", CTX_BACKLOG_FILL, "line", p + 2),
        Chart("softnet_squeeze", "Receive softirq runs that ran out of netdev_budget with work left",
              "events/s", "softnet", CTX_SOFTNET_SQUEEZE, "line", p + 3),
        Chart("softnet_processed", "Packets processed by each CPU in the receive softirq, and RPS IPIs",
              "packets/s", "softnet", CTX_SOFTNET_PROCESSED, "line", p + 4),
        Chart("softnet_flow_limit", "Packets dropped by the per-flow limit (net.core.flow_limit_cpu_bitmap)",
              "packets/s", "softnet", CTX_SOFTNET_FLOW_LIMIT, "line", p + 5),
        Chart("drops_by_kind", "Inbound drops by interface kind (host NICs versus container veths)",
              "packets/s", "interfaces", CTX_DROPS_BY_KIND, "stacked", p + 10),
        Chart("socket_drops", "Socket-level receive drops (not fixed by a larger backlog)",
              "events/s", "sockets", CTX_SOCKET_DROPS, "line", p + 20),
        Chart("tuning", "Receive-path tuning in force", "value", "tuning", CTX_TUNING, "line", p + 30),
    ]
    by_id = {c.id: c for c in charts}
    by_id["softnet_dropped"].add_dim("total")
    by_id["softnet_squeeze"].add_dim("total")
    by_id["softnet_processed"].add_dim("rps_ipis")
    from .kernel.links import KINDS
    for kind in KINDS:
        by_id["drops_by_kind"].add_dim(kind)
    for name in snmp.SOCKET_KEYS:
        by_id["socket_drops"].add_dim(name)
    for name in TUNING_DIMS:
        by_id["tuning"].add_dim(name, algorithm="absolute")
    return charts


def reasons_chart():
    """The kernel's drop reasons, for a collector that can count them. `other` (every reason not
    counted one by one) is there from the start; a reason's dimension appears when it first
    counts, named as the kernel names it, lowercased (dropreasons.dimension_name)."""
    chart = Chart("drop_reasons", "Packets the kernel dropped, by its drop reason (tracepoint skb:kfree_skb)",
                  "packets/s", "reasons", CTX_DROP_REASONS, "stacked", PRIORITY_BASE + 15)
    chart.add_dim(dropreasons.OTHER)
    return chart


# The tuning chart: the charted sysctls, and how many interfaces have RPS on.
TUNING_DIMS = tuning.CHARTED_KEYS + ("rps_interfaces",)

# Per-CPU dimensions: chart id -> (algorithm, divisor)
CPU_DIM_CHARTS = {
    "softnet_dropped": ("incremental", 1),
    "softnet_squeeze": ("incremental", 1),
    "softnet_processed": ("incremental", 1),
    "softnet_flow_limit": ("incremental", 1),
    "softnet_backlog_fill": ("absolute", PRECISION),
}


def cpu_dim_name(cpu):
    return "cpu{0}".format(cpu)


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def sanitize(name):
    """An interface name as Netdata accepts it in a chart id (it rewrites anything else to '_')."""
    return _UNSAFE.sub("_", name)


IFACE_PRIORITY_STEP = 4  # priorities each interface's charts take


def iface_charts(link, peer, master, priority):
    """The charts one interface gets: drops, drop ratio, packets arriving (received + dropped,
    what the ratio alarms sum over minutes), and NIC-level loss for physical NICs."""
    dev = sanitize(link.name)
    family = "{0}/{1}".format(link.role, link.name)
    labels = {"device": link.name, "kind": link.kind, "role": link.role}
    if peer:
        labels["peer"] = peer
    if link.container:
        labels["container"] = link.container
    if master:
        labels["master"] = master
    drops = Chart("iface_{0}_drops".format(dev), "Drops on {0} ({1})".format(link.name, link.role),
                  "packets/s", family, CTX_IFACE_DROPS, "line", priority, labels)
    drops.add_dim("inbound")
    drops.add_dim("outbound", multiplier=-1)
    ratio = Chart("iface_{0}_drop_ratio".format(dev), "Inbound drops as a share of packets arriving on {0}".format(link.name),
                  "percentage", family, CTX_IFACE_DROP_RATIO, "line", priority + 1, labels)
    ratio.add_dim("inbound", algorithm="absolute", divisor=PRECISION, source="ratio")
    packets = Chart("iface_{0}_packets".format(dev), "Packets arriving on {0}: received and dropped".format(link.name),
                    "packets/s", family, CTX_IFACE_PACKETS, "stacked", priority + 2, labels)
    packets.add_dim("received")
    packets.add_dim("dropped", source="inbound")
    charts = [drops, ratio, packets]
    if link.kind == "physical":
        loss = Chart("iface_{0}_nic_loss".format(dev), "Packets the NIC lost before the kernel saw them on {0}".format(link.name),
                     "packets/s", family, CTX_IFACE_NIC_LOSS, "line", priority + 3, labels)
        loss.add_dim("missed")
        loss.add_dim("fifo")
        charts.append(loss)
    return charts
