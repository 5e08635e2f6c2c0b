"""The charts as Prometheus metrics: a pure renderer from (charts, values) to exposition text.

Every chart context declared in charts.py maps to metric families here (FAMILIES), following
Prometheus naming: a `netdrops_` prefix, base units in the name (`_packets`, `_bytes`,
`_seconds`), `_total` on counters, `_ratio` on 0-1 gauges. A dimension becomes a label where its
siblings are the same quantity (`cpu`, `direction`, `kind`, `reason`) and a family of its own where
they are not (a sum over `socket_drops` would count RcvbufErrors twice, since InErrors holds them).
Chart labels (`device`, `kind`, `role`, `peer`, `container`, `master`) become metric labels.

Counters are the collector's running totals (wrap-safe, starting at 0 when the collector starts),
so Prometheus' rate() sees one clean series; a restart of the exporter is an ordinary reset. Sums
that a query can compute (the `total` dimensions) and a dimension that repeats another chart's
(iface_packets' `dropped`) are left out. Netdata's display conventions are
undone: outbound drops are charted negative (multiplier -1) but exported positive, and values
scaled by PRECISION are divided back.

render(charts, values, openmetrics) formats either the Prometheus text format 0.0.4 or
OpenMetrics 1.0.0 (`# UNIT`, counters' `_total` only on samples, `# EOF`).
"""

import logging
import re

from .. import charts as ch
from ..charts import PRECISION
from ..kernel.links import KINDS

CONTENT_TYPE_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

log = logging.getLogger("netdrops")

COUNTER, GAUGE = "counter", "gauge"
PREFIX = "netdrops_"
PERCENT_TO_RATIO = 1.0 / (100 * PRECISION)


class Family:
    """One metric family: its name (without `_total`), type, unit, help, and how a dimension's
    value becomes a sample (a label named `label` whose value is label_value(dim name), times
    `scale`)."""
    __slots__ = ("name", "type", "unit", "help", "label", "label_value", "scale")

    def __init__(self, name, mtype, unit, help_text, label=None, label_value=None, scale=1):
        self.name = PREFIX + name
        self.type = mtype
        self.unit = unit
        self.help = help_text
        self.label = label
        self.label_value = label_value or (lambda dim_name: dim_name)
        self.scale = scale
        if unit and not self.name.endswith("_" + unit):
            raise ValueError("{0}: a family with unit {1} must end in _{1}".format(self.name, unit))

    @property
    def sample_name(self):
        return self.name + "_total" if self.type == COUNTER else self.name


def _cpu_number(dim_name):
    return dim_name[len("cpu"):]


_CPU_DIM = re.compile(r"cpu\d+\Z")
_SKIP = None  # a dimension that is not exported (a sum of the others)

# context -> {dimension name (or a matcher) -> Family, or _SKIP}. A dimension no rule matches is
# a programming error that the tests catch (every declared dimension must be exported or skipped).
_SOFTNET_DROPPED = Family("softnet_dropped_packets", COUNTER, "packets",
                          "Packets dropped because the CPU's backlog queue (net.core.netdev_max_backlog) was full, "
                          "per CPU (softnet_stat column 2).", "cpu", _cpu_number)
_SOFTNET_SQUEEZE = Family("softnet_times_squeezed", COUNTER, "",
                          "Receive softirq rounds that ran out of net.core.netdev_budget or netdev_budget_usecs "
                          "with work left, per CPU (softnet_stat time_squeeze).", "cpu", _cpu_number)
_SOFTNET_PROCESSED = Family("softnet_processed_packets", COUNTER, "packets",
                            "Packets processed by each CPU in the receive softirq (softnet_stat column 1).",
                            "cpu", _cpu_number)
_SOFTNET_RPS = Family("softnet_received_rps", COUNTER, "",
                      "RPS inter-processor interrupts received, all CPUs together (softnet_stat received_rps).")
_FLOW_LIMIT = Family("softnet_flow_limit_packets", COUNTER, "packets",
                     "Packets dropped by the per-flow limit (net.core.flow_limit_cpu_bitmap), per CPU "
                     "(softnet_stat flow_limit_count).", "cpu", _cpu_number)
_BACKLOG_FILL = Family("softnet_backlog_fill_ratio", GAUGE, "ratio",
                       "Backlog queue length as a share of net.core.netdev_max_backlog, per CPU, when sampled.",
                       "cpu", _cpu_number, PERCENT_TO_RATIO)
_BY_KIND = Family("drops_by_kind_packets", COUNTER, "packets",
                  "Inbound drops of every interface, summed by interface kind (physical NICs versus "
                  "container veths, bridges, bonds, vlans, tun/tap).", "kind")
_IFACE_DROPS = Family("iface_drops_packets", COUNTER, "packets",
                      "Packets dropped on an interface, by direction (rx_dropped + rx_missed inbound, "
                      "tx_dropped outbound).", "direction")
_IFACE_RATIO = Family("iface_drop_ratio", GAUGE, "ratio",
                      "Inbound drops as a share of packets arriving on the interface during the last "
                      "collection interval (0 when idle).", "direction", scale=PERCENT_TO_RATIO)
_IFACE_RECEIVED = Family("iface_received_packets", COUNTER, "packets",
                         "Packets received on an interface (rx_packets); with the inbound drops, what "
                         "arrived.")
_NIC_LOSS = Family("iface_nic_loss_packets", COUNTER, "packets",
                   "Packets a physical NIC lost before the kernel saw them (rx_missed_errors, rx_fifo_errors).",
                   "reason")

_DROP_REASON = Family("drop_reason_packets", COUNTER, "packets",
                      "Packets the kernel dropped, by the reason it gave (tracepoint skb:kfree_skb, counted in "
                      "the kernel); \"other\" is every reason not counted one by one.", "reason")
_REASON_DIM = re.compile(r"[a-z0-9_]+\Z")  # the kernel's reason names, lowercased

_SOCKET = {
    "udp_rcvbuf_errors": Family("socket_udp_rcvbuf_errors", COUNTER, "",
                                "UDP datagrams dropped because a socket's receive buffer was full "
                                "(Udp and Udp6 RcvbufErrors); a larger backlog does not help these."),
    "udp_in_errors": Family("socket_udp_in_errors", COUNTER, "",
                            "UDP datagrams that could not be delivered (Udp and Udp6 InErrors, which include "
                            "RcvbufErrors)."),
    "udp_sndbuf_errors": Family("socket_udp_sndbuf_errors", COUNTER, "",
                                "UDP sends that failed because a socket's send buffer was full "
                                "(Udp and Udp6 SndbufErrors)."),
    "tcp_listen_drops": Family("socket_tcp_listen_drops", COUNTER, "",
                               "TCP connection requests dropped by a listening socket (TcpExt ListenDrops)."),
    "tcp_listen_overflows": Family("socket_tcp_listen_overflows", COUNTER, "",
                                   "TCP connection requests dropped because a listen queue was full "
                                   "(TcpExt ListenOverflows)."),
}

_TUNING = {
    "netdev_max_backlog": Family("tuning_netdev_max_backlog_packets", GAUGE, "packets",
                                 "net.core.netdev_max_backlog: the per-CPU input queue limit."),
    "netdev_budget": Family("tuning_netdev_budget_packets", GAUGE, "packets",
                            "net.core.netdev_budget: packets per receive softirq round."),
    "netdev_budget_usecs": Family("tuning_netdev_budget_seconds", GAUGE, "seconds",
                                  "net.core.netdev_budget_usecs, in seconds: time per receive softirq round.",
                                  scale=1e-6),
    "rmem_default": Family("tuning_rmem_default_bytes", GAUGE, "bytes", "net.core.rmem_default."),
    "rmem_max": Family("tuning_rmem_max_bytes", GAUGE, "bytes", "net.core.rmem_max."),
    "wmem_default": Family("tuning_wmem_default_bytes", GAUGE, "bytes", "net.core.wmem_default."),
    "wmem_max": Family("tuning_wmem_max_bytes", GAUGE, "bytes", "net.core.wmem_max."),
    "rps_sock_flow_entries": Family("tuning_rps_sock_flow_entries", GAUGE, "",
                                    "net.core.rps_sock_flow_entries (RFS); 0 means RFS is off."),
    "rps_interfaces": Family("tuning_rps_interfaces", GAUGE, "",
                             "Interfaces with RPS on in at least one RX queue."),
}

FAMILIES = {
    ch.CTX_SOFTNET_DROPPED: {"total": _SKIP, _CPU_DIM: _SOFTNET_DROPPED},
    ch.CTX_SOFTNET_SQUEEZE: {"total": _SKIP, _CPU_DIM: _SOFTNET_SQUEEZE},
    ch.CTX_SOFTNET_PROCESSED: {"rps_ipis": _SOFTNET_RPS, _CPU_DIM: _SOFTNET_PROCESSED},
    ch.CTX_SOFTNET_FLOW_LIMIT: {_CPU_DIM: _FLOW_LIMIT},
    ch.CTX_BACKLOG_FILL: {_CPU_DIM: _BACKLOG_FILL},
    ch.CTX_DROPS_BY_KIND: {kind: _BY_KIND for kind in KINDS},
    ch.CTX_IFACE_DROPS: {"inbound": _IFACE_DROPS, "outbound": _IFACE_DROPS},
    ch.CTX_IFACE_DROP_RATIO: {"inbound": _IFACE_RATIO},
    ch.CTX_IFACE_PACKETS: {"received": _IFACE_RECEIVED, "dropped": _SKIP},  # dropped: iface_drops inbound
    ch.CTX_IFACE_NIC_LOSS: {"missed": _NIC_LOSS, "fifo": _NIC_LOSS},
    ch.CTX_SOCKET_DROPS: dict(_SOCKET),
    ch.CTX_TUNING: dict(_TUNING),
    ch.CTX_DROP_REASONS: {_REASON_DIM: _DROP_REASON},
}


def family_of(context, dim_name):
    """The Family a chart dimension is exported as, None when it is deliberately not exported;
    KeyError when nothing here says (a chart or dimension added without an export rule: the
    tests catch it, and a scrape leaves it out)."""
    rules = FAMILIES.get(context)
    if rules is None:
        raise KeyError("no OpenMetrics rule for chart context {0}".format(context))
    if dim_name in rules:
        return rules[dim_name]
    for key, family in rules.items():
        if not isinstance(key, str) and key.match(dim_name):
            return family
    raise KeyError("no OpenMetrics rule for dimension {0!r} of {1}".format(dim_name, context))


_LABEL_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")


def escape_label_value(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text, openmetrics):
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def format_value(value):
    if isinstance(value, int):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)) if value else "0"
    return repr(float(value))


def label_text(labels):
    if not labels:
        return ""
    return "{" + ",".join('{0}="{1}"'.format(k, escape_label_value(v)) for k, v in labels) + "}"


_WARNED = set()


def collect_samples(charts, values):
    """[(Family, [(labels tuple, value)])] in first-seen order; one sample per label set.

    `charts` are objects with .context, .labels and .dims (charts.Chart, or a frozen view of one);
    dimensions without a value in `values` are left out (not collected yet)."""
    families = {}
    order = []
    for chart in charts:
        base = sorted((_LABEL_NAME_BAD.sub("_", k), v) for k, v in chart.labels.items() if v is not None)
        for dim in chart.dims:
            value = values.get(dim.id)
            if value is None:
                continue
            try:
                family = family_of(chart.context, dim.name)
            except KeyError as error:  # a chart added without a rule: leave it out, say so once
                if (chart.context, dim.name) not in _WARNED:
                    _WARNED.add((chart.context, dim.name))
                    log.warning("%s", error.args[0])
                continue
            if family is None:
                continue
            labels = list(base)
            if family.label:
                labels.append((family.label, family.label_value(dim.name)))
            labels = tuple(sorted(labels))
            scale = family.scale * abs(dim.multiplier) / dim.divisor
            sample = value if scale == 1 else value * scale
            entry = families.get(family.name)
            if entry is None:
                entry = families[family.name] = (family, {})
                order.append(family.name)
            entry[1].setdefault(labels, sample)  # a duplicate label set would fail the whole scrape
    return [(families[name][0], list(families[name][1].items())) for name in order]


def render(charts, values, openmetrics=False):
    """Exposition text of every chart's collected values: Prometheus text 0.0.4, or OpenMetrics
    1.0.0 when `openmetrics`."""
    lines = []
    for family, samples in collect_samples(charts, values):
        meta = family.name if openmetrics else family.sample_name
        lines.append("# HELP {0} {1}".format(meta, escape_help(family.help, openmetrics)))
        lines.append("# TYPE {0} {1}".format(meta, family.type))
        if openmetrics and family.unit:
            lines.append("# UNIT {0} {1}".format(meta, family.unit))
        name = family.sample_name
        for labels, value in samples:
            lines.append("{0}{1} {2}".format(name, label_text(labels), format_value(value)))
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


def wants_openmetrics(accept):
    """True when an Accept header prefers OpenMetrics to the Prometheus text format (Prometheus
    sends both, with q-values)."""
    best_om = best_text = 0.0
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if media == "application/openmetrics-text":
            best_om = max(best_om, q)
        elif media in ("text/plain", "*/*", "text/*"):
            best_text = max(best_text, q)
    return best_om > 0 and best_om >= best_text
