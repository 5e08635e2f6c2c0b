"""The diagnosis: a declared table of causes, each with the evidence it needs, the thresholds it
decides by, a reason, what it recommends (remedy ids, see recommend.REMEDIES) and what helps
when tuning cannot.

Every detector is a pure function of Evidence and its cause's thresholds (a mapping name ->
value) that returns a Detection (numbers, where, how sure) or None: no number a decision rests
on is written inside a detector. diagnose() runs the table in order, skipping (and listing as
not assessed) a cause whose needed evidence the source does not give; nothing found means
nothing is wrong.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import ethertypes


@dataclass(frozen=True)
class Threshold:
    name: str
    value: float
    unit: str
    why: str


# -- thresholds several causes share (declared once) -------------------------------------------

TARGET = Threshold("target_drops_per_s", 0.5, "/s",
                   "the runbook's success criterion (and --apply --verify's): a loss rate below it passes")
MIN_EVENTS = Threshold("min_events", 1, "events",
                       "a counter has to move by at least this much within the window to count as rising")
EXPLAINED_SHARE = Threshold("explained_share", 0.5, "share",
                            "another counter that accounts for at least this share of a count explains it")
SATURATED_BUSY = Threshold("saturated_busy_pct", 90.0, "%",
                           "a CPU this busy has no time left: a longer queue only adds latency")
MIN_RX_PER_S = Threshold("min_rx_per_s", 10, "/s",
                         "an interface counts as carrying traffic above this many received packets per second")
REASONS_AGREE = Threshold("reasons_agree_share", 0.8, "share",
                          "a drop reason's count and a counter of the same drops agree when the smaller is at "
                          "least this share of the larger (the two are read a moment apart)")

# The target as a number, for the success tables (report.py, verify.py).
TARGET_DROPS_PER_S = TARGET.value

# Facts of the kernel (not decisions): shown beside a value, and stepped from when the current
# value cannot be read (recommend.py).
KERNEL_DEFAULTS = {
    "netdev_max_backlog": 1000,
    "netdev_budget": 300,
    "rmem_default": 212992,
    "rmem_max": 212992,
    "wmem_default": 212992,
    "wmem_max": 212992,
    "rps_sock_flow_entries": 0,
}

PROBLEM = "problem"
NOTE = "note"


@dataclass
class Criterion:
    metric: str
    now: Optional[float]
    target: float
    unit: str = "/s"

    @property
    def met(self):
        return self.now is not None and self.now < self.target


@dataclass
class Detection:
    summary: str
    confidence: str                 # high, medium, low
    confidence_reason: str
    evidence: List[str]
    cpus: List[int] = field(default_factory=list)
    interfaces: List[str] = field(default_factory=list)
    criteria: List[Criterion] = field(default_factory=list)
    beyond_tuning: Optional[str] = None   # situation-specific advice, added to the cause's
    confirmed_by: Dict[str, float] = field(default_factory=dict)   # drop reason -> drops in the window
    reasons_agree: Optional[bool] = None  # the reasons and the counters agree; None: nothing to compare


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    severity: str
    # Evidence fields, named as in evidence.py: "cpus.dropped" (a CpuEvidence field),
    # "interfaces.missed" (an IfaceEvidence field), "sockets.udp_rcvbuf_errors" (SOCKET_KEYS),
    # "tuning.rmem_max" (TUNING_KEYS), "host.online_cpus" (HostFacts), "rps_interfaces" (Evidence).
    # needs: what the detector decides on; without a value for each (any one of "a|b") the
    # cause is not assessed. reads: what else it reads, to corroborate or to show.
    needs: Tuple[str, ...]
    reads: Tuple[str, ...]
    thresholds: Tuple[Threshold, ...]   # every number the detector decides by
    reason: str                     # why it loses packets, one or two sentences
    remedies: Tuple[str, ...]       # recommend.REMEDIES ids
    beyond_tuning: Optional[str]    # what helps when no setting here does
    detect: Callable                # (Evidence, {threshold name: value}) -> Detection or None

    @property
    def limits(self):
        """{threshold name: value}: what the detector is given."""
        return {t.name: t.value for t in self.thresholds}


@dataclass
class Finding:
    cause: Cause
    detection: Detection

    @property
    def id(self):
        return self.cause.id


@dataclass
class NotAssessed:
    """A cause the diagnosis could not look at: the source gives none of a field it needs."""
    cause: Cause
    missing: Tuple[str, ...]        # the needs entries without a value

    @property
    def id(self):
        return self.cause.id

    @property
    def sentence(self):
        what = [FIELD_LABELS[name] for name in self.missing]
        title = self.cause.title
        return "{0} (needs {1}, which this source does not give)".format(
            title if title[:2].isupper() else title[0].lower() + title[1:],   # 'TCP ...' stays
            " and ".join(what) if len(what) < 3 else ", ".join(what[:-1]) + " and " + what[-1])


@dataclass
class Diagnosis:
    findings: List[Finding]          # problems first, in table order
    not_assessed: List[NotAssessed]  # in table order


def fmt_rate(per_s):
    if per_s is None:
        return "unknown"
    if per_s >= 100:
        return "{0:,.0f}/s".format(per_s)
    if per_s >= 10:
        return "{0:.1f}/s".format(per_s)
    return "{0:.2f}/s".format(per_s)


def fmt_count(count):
    return "{0:,.0f}".format(count) if count is not None else "unknown"


def cpu_name(cpu_id):
    """-1 stands for all CPUs together (a source without per-CPU counters)."""
    return "CPU {0}".format(cpu_id) if cpu_id >= 0 else "all CPUs"


def _moved(value, min_events):
    return value is not None and value >= min_events


def _where_iface(iface):
    """'veth ndl1h0 (netns lab)', or with the peer when the container is not known."""
    extra = []
    if iface.container:
        extra.append(iface.container)
    elif iface.peer:
        extra.append("peer " + iface.peer)
    role = iface.role if iface.role and iface.role != iface.kind else iface.kind
    return "{0} {1}{2}".format(role, iface.name, " ({0})".format(", ".join(extra)) if extra else "")


def _inbound_not_missed(iface):
    """Inbound drops other than NIC misses (netdrops counts rx_missed inside inbound)."""
    if iface.inbound_drops is None:
        return None
    return max(0.0, iface.inbound_drops - (iface.missed or 0))


def _reason(ev, name):
    """Drops of one kernel drop reason (lowercase name) over the window; None when the source
    does not count reasons. A reason the source has not seen counts 0: its dimension appears when
    it first counts."""
    if ev.reasons is None:
        return None
    return ev.reasons.get(name, 0.0)


def _agree(a, b, share):
    """Two counts of the same drops agree when the smaller is at least `share` of the larger."""
    return min(a, b) >= share * max(a, b)


def reason_label(name):
    """'cpu_backlog' -> 'CPU_BACKLOG', as the kernel names it."""
    return name.upper()


def _reason_line(ev, name, count):
    """'kernel drop reason NAME: N (r/s) in the window': a reason's count as evidence."""
    return "kernel drop reason {0}: {1} ({2}) in the window".format(
        reason_label(name), fmt_count(count), fmt_rate(ev.rate(count)))


def _confirm(ev, name, counted, counter_label, agree_share):
    """A drop reason against the counter a finding rests on: (evidence line or None, agrees:
    True/False, or None when reasons are not counted, {reason: drops})."""
    count = _reason(ev, name)
    if count is None:
        return None, None, {}
    counted = counted or 0.0
    agrees = _agree(count, counted, agree_share)
    line = "{0}, {1} {2}: {3}".format(_reason_line(ev, name, count), counter_label, fmt_count(counted),
                                       "they agree" if agrees else "they disagree")
    return line, agrees, {name: count}


def _sampled(ev, name):
    """The detail samples (sources/trace_sample.py) that looked at one reason."""
    return [s for s in ev.reason_samples if name in s.reasons]


def _top(counts):
    """(key, count) pairs, largest first."""
    return sorted(counts.items(), key=lambda kv: -kv[1])


# -- detectors ---------------------------------------------------------------------------------

def detect_backlog_overflow(ev, th):
    min_events, explained, near_full_pct, target = (
        th["min_events"], th["explained_share"], th["backlog_near_full_pct"], th["target_drops_per_s"])
    total = ev.total("dropped")
    if not _moved(total, min_events):
        return None
    cpus = sorted((c for c in ev.cpus if _moved(c.dropped, min_events)), key=lambda c: -c.dropped)
    backlog = ev.tuning.get("netdev_max_backlog")
    lines = ["softnet_stat 'dropped' (backlog full): {0}".format(", ".join(
        "{0} {1} ({2})".format(cpu_name(c.cpu), fmt_count(c.dropped), fmt_rate(ev.rate(c.dropped))) for c in cpus))
        + " in {0:.0f} s".format(ev.window_seconds)]
    near_full = [c for c in cpus if c.backlog_peak_pct is not None and c.backlog_peak_pct >= near_full_pct]
    # the queue fills and drains within a burst: a sampled length of 0 says nothing, so only
    # a length actually caught is shown
    peaks = [c for c in cpus if c.backlog_peak_pct]
    default = KERNEL_DEFAULTS["netdev_max_backlog"]
    if peaks:
        lines.append("backlog length peak: {0} of net.core.netdev_max_backlog ({1})".format(", ".join(
            "{0} {1:.0f}%".format(cpu_name(c.cpu), c.backlog_peak_pct) for c in peaks), fmt_count(backlog)))
    elif backlog is not None:
        lines.append("net.core.netdev_max_backlog = {0}{1}".format(
            fmt_count(backlog), " (kernel default {0})".format(default) if backlog != default else ""))
    # veth: the peer's rx_dropped counts each backlog drop; a NIC's rx_dropped does too
    receivers = sorted((i for i in ev.interfaces
                        if _moved(_inbound_not_missed(i), min_events) and i.role != "bond-slave"),
                       key=lambda i: -_inbound_not_missed(i))
    matched = sum(_inbound_not_missed(i) for i in receivers)
    for iface in receivers[:5]:
        lines.append("{0}: {1} inbound drops ({2})".format(
            _where_iface(iface), fmt_count(_inbound_not_missed(iface)), fmt_rate(ev.rate(_inbound_not_missed(iface)))))
    # seen from a container: its end of the veth counts the same packets as tx drops
    senders = _veth_senders(ev, min_events)
    matched += sum(i.outbound_drops for i in senders)
    for iface in senders[:3]:
        lines.append("{0}: {1} outbound drops ({2}), the sending end of a veth whose peer's backlog "
                     "was full".format(_where_iface(iface), fmt_count(iface.outbound_drops),
                                       fmt_rate(ev.rate(iface.outbound_drops))))
    sndbuf = ev.sockets.get("udp_sndbuf_errors")
    if _moved(sndbuf, min_events):
        lines.append("UDP SndbufErrors rose by {0} alongside: a UDP sender gets ENOBUFS when the "
                     "packet is dropped on its way out, so these are likely the same packets".format(fmt_count(sndbuf)))
    flow = ev.total("flow_limit")
    if _moved(flow, min_events):
        lines.append("flow_limit_count rose by {0}: some of these drops are the flow limit's "
                     "(net.core.flow_limit_cpu_bitmap), which also scales with netdev_max_backlog".format(fmt_count(flow)))
    reason_line, agrees, confirmed = _confirm(ev, "cpu_backlog", total, "softnet_stat 'dropped'",
                                              th["reasons_agree_share"])
    if reason_line:
        lines.append(reason_line)
    if agrees:
        confidence, why = "high", "the kernel's drop reason CPU_BACKLOG counts the same drops as softnet_stat"
    elif agrees is False:
        confidence, why = "medium", ("softnet_stat counted {0} backlog drops but the drop reason CPU_BACKLOG {1}: "
                                     "they disagree (reasons counted only part of the window, or softnet also "
                                     "counted drops of a device going down)").format(
                                         fmt_count(total), fmt_count(confirmed["cpu_backlog"]))
    elif near_full:
        confidence, why = "high", "the backlog was seen {0:.0f}% full on CPU {1}".format(
            near_full[0].backlog_peak_pct, near_full[0].cpu)
    elif (receivers or senders) and matched >= explained * total:
        confidence, why = "high", "the interfaces' drop counters match the CPU backlog drops"
    elif ev.source == "netdata-stock":
        confidence, why = "medium", "softnet 'dropped' also counts flow-limit drops and drops of a device going down"
    else:
        confidence, why = "medium", "no interface's drops match, and the backlog was never seen near full"
    where = ", ".join(cpu_name(c.cpu) for c in cpus)
    if receivers:
        where += ", arriving on " + ", ".join(_where_iface(i) for i in receivers[:3])
    elif senders:
        where += ", sent through " + ", ".join(_where_iface(i) for i in senders[:3])
    criteria = [Criterion("backlog drops, CPU {0}".format(c.cpu), ev.rate(c.dropped), target)
                for c in cpus[:4]]
    criteria += [Criterion("inbound drops, {0}".format(i.name), ev.rate(_inbound_not_missed(i)), target)
                 for i in receivers[:3]]
    return Detection(
        summary="{0} packets dropped because a CPU's backlog queue was full ({1}) on {2}".format(
            fmt_count(total), fmt_rate(ev.rate(total)), where),
        confidence=confidence, confidence_reason=why, evidence=lines,
        cpus=[c.cpu for c in cpus], interfaces=[i.name for i in receivers + senders], criteria=criteria,
        confirmed_by=confirmed, reasons_agree=agrees)


def _veth_senders(ev, min_events):
    return sorted((i for i in ev.interfaces if i.kind == "veth" and _moved(i.outbound_drops, min_events)),
                  key=lambda i: -i.outbound_drops)


def detect_budget_exhaustion(ev, th):
    min_events, squeeze_target = th["min_events"], th["squeeze_target_per_s"]
    cpus = [c for c in ev.cpus if _moved(c.dropped, min_events) and _moved(c.squeezed, min_events)]
    if not cpus:
        return None
    lines = ["time_squeeze on CPUs that drop: {0}".format(", ".join(
        "{0} {1} ({2})".format(cpu_name(c.cpu), fmt_count(c.squeezed), fmt_rate(ev.rate(c.squeezed))) for c in cpus))]
    lines.append("net.core.netdev_budget = {0}, net.core.netdev_budget_usecs = {1}".format(
        fmt_count(ev.tuning.get("netdev_budget")), fmt_count(ev.tuning.get("netdev_budget_usecs"))))
    reason_line, agrees, confirmed = _confirm(ev, "cpu_backlog", ev.total("dropped"), "softnet_stat 'dropped'",
                                              th["reasons_agree_share"])
    if reason_line:
        lines.append(reason_line)
    return Detection(confirmed_by=confirmed, reasons_agree=agrees,
        summary="the receive softirq ran out of budget with packets left on {0} while they dropped".format(
            ", ".join(cpu_name(c.cpu) for c in cpus)),
        confidence="medium", confidence_reason="squeezes and drops on the same CPUs; squeezes alone are not drops",
        evidence=lines, cpus=[c.cpu for c in cpus],
        criteria=[Criterion("time_squeeze, CPU {0}".format(c.cpu), ev.rate(c.squeezed), squeeze_target)
                  for c in cpus[:2]])


def detect_squeeze_without_drops(ev, th):
    min_events = th["min_events"]
    cpus = [c for c in ev.cpus if _moved(c.squeezed, min_events) and not _moved(c.dropped, min_events)]
    if not cpus or _moved(ev.total("dropped"), min_events):
        return None
    return Detection(
        summary="time_squeeze rose on {0} with no drops".format(", ".join(cpu_name(c.cpu) for c in cpus)),
        confidence="high", confidence_reason="no CPU dropped a packet in the window",
        evidence=["time_squeeze: {0}".format(", ".join(
            "{0} {1}".format(cpu_name(c.cpu), fmt_rate(ev.rate(c.squeezed))) for c in cpus))],
        cpus=[c.cpu for c in cpus])


def _carries_traffic(ev, iface, min_rx_per_s, min_events):
    return ((iface.rx_packets is not None and ev.rate(iface.rx_packets) >= min_rx_per_s)
            or _moved(iface.inbound_drops, min_events))


def _rps_candidates(ev, min_rx_per_s, min_events):
    """Interfaces carrying traffic with RPS off that RPS can spread: single-queue devices and
    veths. Only the host itself can tell (per-queue masks are not charted)."""
    found = []
    for iface in ev.interfaces:
        if iface.kind not in ("physical", "veth", "tun", "vlan", "bond") or iface.role == "bond-slave":
            continue
        if not _carries_traffic(ev, iface, min_rx_per_s, min_events) or iface.rps_on is not False:
            continue
        if iface.kind == "veth" or iface.rx_queues == 1:
            found.append(iface)
    return found


def detect_rx_on_one_cpu(ev, th):
    min_cpus, min_processed, hot_share, pair_share, min_cpus_for_pair, min_events, busy_pct, min_rx = (
        th["min_cpus_to_spread"], th["min_processed_per_s"], th["hot_cpu_share"], th["hot_pair_share"],
        th["min_cpus_for_a_pair"], th["min_events"], th["saturated_busy_pct"], th["min_rx_per_s"])
    usable = ev.host.usable_cpus
    n_cpus = len(usable) if usable is not None else len(ev.cpus)
    total = ev.total("processed")
    if n_cpus < min_cpus or total is None or ev.rate(total) < min_processed:
        return None
    ranked = sorted((c for c in ev.cpus if c.processed is not None), key=lambda c: -c.processed)
    hot = ranked[:1] if ranked[0].processed >= hot_share * total else ranked[:2]
    share = sum(c.processed for c in hot) / total
    if len(hot) > 1 and (n_cpus < min_cpus_for_pair or share < pair_share):
        return None
    distressed = [c for c in hot if _moved(c.dropped, min_events) or _moved(c.squeezed, min_events)
                  or (c.busy_pct is not None and c.busy_pct >= busy_pct)]
    if not distressed:
        return None
    candidates = _rps_candidates(ev, min_rx, min_events)
    remote_note = None
    if not candidates and not ev.host.local and ev.rps_interfaces == 0:
        # another node: its per-queue masks are not charted, but no interface there has RPS on
        candidates = [i for i in ev.interfaces if i.kind in ("physical", "veth") and i.role != "bond-slave"
                      and _carries_traffic(ev, i, min_rx, min_events)]
        remote_note = ("RX queues and rps_cpus masks are only visible on the node itself: run "
                       "netdrops-advisor there for the exact rps_cpus lines.")
    if not candidates:
        return None
    lines = ["{0} processed {1:.0f}% of {2} received packets".format(
        " and ".join(cpu_name(c.cpu) for c in hot), 100 * share, fmt_rate(ev.rate(total)))]
    for c in distressed:
        lines.append("{0}: {1} dropped, {2} squeezed{3}".format(
            cpu_name(c.cpu), fmt_rate(ev.rate(c.dropped)), fmt_rate(ev.rate(c.squeezed)),
            ", {0:.0f}% busy".format(c.busy_pct) if c.busy_pct is not None else ""))
    for iface in candidates:
        queues = "{0} RX queue{1}".format(iface.rx_queues, "" if iface.rx_queues == 1 else "s") \
            if iface.rx_queues else "RX queues unknown"
        lines.append("{0}: {1}, RPS off, {2} received".format(
            _where_iface(iface), queues, fmt_rate(ev.rate(iface.rx_packets))))
    return Detection(
        summary="receive work is concentrated on {0} while {1} ha{2} RPS off".format(
            " and ".join(cpu_name(c.cpu) for c in hot), ", ".join(i.name for i in candidates),
            "s" if len(candidates) == 1 else "ve"),
        confidence="medium" if remote_note is None else "low",
        confidence_reason="which device feeds the hot CPU is inferred from traffic, not traced",
        evidence=lines, cpus=[c.cpu for c in hot], interfaces=[i.name for i in candidates],
        beyond_tuning=remote_note)


def detect_socket_rcvbuf(ev, th):
    min_events, small_factor, target = th["min_events"], th["small_rcvbuf_factor"], th["target_drops_per_s"]
    errors = ev.sockets.get("udp_rcvbuf_errors")
    by_reason = _reason(ev, "socket_rcvbuff")
    if not (_moved(errors, min_events) or _moved(by_reason, min_events)):
        return None
    dropped = ev.total("dropped")
    lines = ["UDP RcvbufErrors: {0} in {1:.0f} s ({2})".format(fmt_count(errors), ev.window_seconds, fmt_rate(ev.rate(errors)))]
    reason_line, agrees, confirmed = _confirm(ev, "socket_rcvbuff", errors, "UDP RcvbufErrors", th["reasons_agree_share"])
    if reason_line:
        lines.append(reason_line)
    elsewhere = agrees is False and by_reason > (errors or 0)
    if elsewhere:
        lines.append("the drop reason counts every network namespace and every socket type, RcvbufErrors only "
                     "this namespace's UDP: the rest are sockets elsewhere (a container's, or not UDP)")
    worst = max(v for v in (errors, by_reason) if v is not None)
    if ev.sockets.get("udp_in_errors") is not None:
        lines.append("UDP InErrors (which include RcvbufErrors): {0}".format(fmt_rate(ev.rate(ev.sockets["udp_in_errors"]))))
    lines.append("backlog drops in the same window: {0} — the packets got through the backlog and "
                 "died at the full socket".format(fmt_rate(ev.rate(dropped))))
    lines.append("net.core.rmem_default = {0}, net.core.rmem_max = {1}".format(
        fmt_count(ev.tuning.get("rmem_default")), fmt_count(ev.tuning.get("rmem_max"))))
    for sock in ev.udp_socket_drops:
        lines.append("{0} {1}:{2} held by {3}: {4} drops {5}, {6} bytes waiting to be read".format(
            sock.proto.upper(), "[{0}]".format(sock.address) if ":" in sock.address else sock.address, sock.port,
            ", ".join(sock.owners) or "an unknown process", fmt_count(sock.drops),
            "in the window" if sock.since == "window" else "since it opened", fmt_count(sock.rx_queue)))
    rmem_default = ev.tuning.get("rmem_default")
    small = [s for s in ev.udp_socket_drops
             if 0 < s.rx_queue and rmem_default and s.rx_queue * small_factor < rmem_default]
    if small:
        lines.append("{0} held only {1} bytes while dropping, far below rmem_default: the application "
                     "probably sets a small SO_RCVBUF itself, which no sysctl overrides".format(
                         ", ".join("port {0}".format(s.port) for s in small), fmt_count(small[0].rx_queue)))
    if agrees:
        why = "the kernel counts these drops by name twice (Udp RcvbufErrors and the drop reason SOCKET_RCVBUFF), and the two agree"
    elif elsewhere:
        why = "the kernel's drop reason SOCKET_RCVBUFF names them; this namespace's RcvbufErrors sees only part"
    elif agrees is False:
        why = "Udp RcvbufErrors counts them by name, but the drop reason SOCKET_RCVBUFF disagrees"
    else:
        why = "the kernel counts these drops by name (Udp RcvbufErrors)"
    return Detection(
        summary="{0} datagrams ({1}) were dropped because a socket's receive buffer was full".format(
            fmt_count(worst), fmt_rate(ev.rate(worst))),
        confidence="high" if agrees is not False or elsewhere else "medium", confidence_reason=why,
        evidence=lines, criteria=[Criterion("UDP receive-buffer errors", ev.rate(worst), target)],
        confirmed_by=confirmed, reasons_agree=agrees)


def detect_socket_sndbuf(ev, th):
    min_events, explained_share, target = th["min_events"], th["explained_share"], th["target_drops_per_s"]
    errors = ev.sockets.get("udp_sndbuf_errors")
    if not _moved(errors, min_events):
        return None
    # SndbufErrors also count sends the egress path dropped (ENOBUFS), e.g. into a veth whose
    # peer's backlog was full: when backlog or veth drops account for them, they are not a
    # send-buffer problem (backlog_overflow reports them)
    explained = (ev.total("dropped") or 0) + sum(i.outbound_drops for i in _veth_senders(ev, min_events))
    if explained >= explained_share * errors:
        return None
    return Detection(
        summary="{0} UDP sends ({1}) failed because a socket's send buffer was full".format(
            fmt_count(errors), fmt_rate(ev.rate(errors))),
        confidence="medium", confidence_reason="SndbufErrors also count sends dropped on the way out "
                                               "(a full qdisc), which a larger buffer does not help",
        evidence=["UDP SndbufErrors: {0}".format(fmt_rate(ev.rate(errors))),
                  "net.core.wmem_default = {0}, net.core.wmem_max = {1}".format(
                      fmt_count(ev.tuning.get("wmem_default")), fmt_count(ev.tuning.get("wmem_max")))],
        criteria=[Criterion("UDP send-buffer errors", ev.rate(errors), target)])


def detect_listen_overflow(ev, th):
    min_events, target = th["min_events"], th["target_drops_per_s"]
    overflows = ev.sockets.get("tcp_listen_overflows")
    drops = ev.sockets.get("tcp_listen_drops")
    by_reason = _reason(ev, "tcp_listen_overflow")
    if not (_moved(overflows, min_events) or _moved(drops, min_events) or _moved(by_reason, min_events)):
        return None
    worst = max(v for v in (overflows, drops, by_reason) if v is not None)
    lines = ["TcpExt ListenOverflows {0}, ListenDrops {1}".format(fmt_rate(ev.rate(overflows)), fmt_rate(ev.rate(drops)))]
    reason_line, agrees, confirmed = _confirm(ev, "tcp_listen_overflow", overflows, "TcpExt ListenOverflows",
                                              th["reasons_agree_share"])
    if reason_line:
        lines.append(reason_line)
    elsewhere = agrees is False and by_reason > (overflows or 0)
    if elsewhere:
        lines.append("the drop reason counts every network namespace, TcpExt only this one's: the listener is "
                     "in another namespace (a container)")
    if agrees is False and not elsewhere:
        why = "TcpExt counts more overflows than the drop reason TCP_LISTEN_OVERFLOW: a SYN refused at a full " \
              "queue is counted by TcpExt only; the reason marks the completing ACKs the kernel frees"
    elif elsewhere:
        why = "the kernel's drop reason TCP_LISTEN_OVERFLOW names them; this namespace's TcpExt sees only part"
    elif agrees:
        why = "TcpExt ListenOverflows and the drop reason TCP_LISTEN_OVERFLOW agree"
    else:
        why = "the kernel counts these by name (TcpExt ListenOverflows/ListenDrops)"
    return Detection(
        summary="TCP connections were dropped because a listening socket's accept queue was full ({0})".format(
            fmt_rate(ev.rate(worst))),
        confidence="high", confidence_reason=why, evidence=lines,
        criteria=[Criterion("TCP listen drops", ev.rate(worst), target)], confirmed_by=confirmed, reasons_agree=agrees)


def detect_nic_loss(ev, th):
    min_events, target = th["min_events"], th["target_drops_per_s"]
    lossy = [i for i in ev.interfaces if i.kind == "physical" and _moved((i.missed or 0) + (i.fifo or 0), min_events)]
    if not lossy:
        return None
    lines = ["{0}: rx_missed {1}, rx_fifo {2}".format(i.name, fmt_rate(ev.rate(i.missed)), fmt_rate(ev.rate(i.fifo)))
             for i in lossy]
    advice = "For {0}: `ethtool -g DEV` shows the RX ring size and its maximum; `ethtool -G DEV rx MAX` " \
             "enlarges it; `ethtool -L DEV combined N` adds queues where the NIC has them.".format(
                 ", ".join(i.name for i in lossy))
    return Detection(
        summary="the NIC lost packets before the kernel saw them on {0}".format(", ".join(i.name for i in lossy)),
        confidence="high", confidence_reason="rx_missed/rx_fifo are the NIC's own counters",
        evidence=lines, interfaces=[i.name for i in lossy], beyond_tuning=advice,
        criteria=[Criterion("NIC misses, {0}".format(i.name), ev.rate((i.missed or 0) + (i.fifo or 0)), target)
                  for i in lossy])


def detect_cpu_saturated(ev, th):
    min_events, busy_pct = th["min_events"], th["saturated_busy_pct"]
    hot = [c for c in ev.cpus if (_moved(c.dropped, min_events) or _moved(c.squeezed, min_events))
           and c.busy_pct is not None and c.busy_pct >= busy_pct]
    if not hot:
        return None
    lines = ["{0}: {1:.0f}% busy (user, system, irq, softirq, steal), {2:.0f}% in softirq{3}".format(
        cpu_name(c.cpu), c.busy_pct, c.softirq_pct or 0,
        ", {0:.0f}% at nice > 0 not counted (softirq preempts it)".format(c.nice_pct) if c.nice_pct else "")
        for c in hot]
    reason_line, agrees, confirmed = _confirm(ev, "cpu_backlog", ev.total("dropped"), "softnet_stat 'dropped'",
                                              th["reasons_agree_share"])
    if reason_line:
        lines.append(reason_line)
    return Detection(
        summary="{0} had no time left ({1}) while dropping".format(
            ", ".join(cpu_name(c.cpu) for c in hot), ", ".join("{0:.0f}% busy".format(c.busy_pct) for c in hot)),
        confidence="medium", confidence_reason="busy time averaged over the window",
        evidence=lines, cpus=[c.cpu for c in hot], confirmed_by=confirmed, reasons_agree=agrees)


def detect_unexplained_iface_drops(ev, th):
    """Interface drops the backlog does not account for: often harmless (frames for protocols
    nobody listens to), sometimes a driver's or a bridge's own limit."""
    floor, explained_share = th["target_drops_per_s"], th["explained_share"]
    softnet = ev.total("dropped") or 0
    # drop reasons that count in an interface's rx_dropped have causes of their own
    named = sum(_reason(ev, name) or 0 for name in RX_DROPPED_REASONS)
    found = []
    for iface in ev.interfaces:
        drops = _inbound_not_missed(iface)
        if drops is None or ev.rate(drops) < floor or iface.role == "bond-slave":
            continue
        if softnet >= explained_share * drops:
            continue  # the backlog explains it (backlog_overflow reports it)
        if named >= explained_share * drops:
            continue  # a drop reason explains it (its cause reports it)
        found.append((iface, drops))
    if not found:
        return None
    lines = []
    for iface, drops in found:
        why = {
            "physical": "frames the stack refused (unknown protocol, VLAN not configured) or the driver's own drops: `ip -s -s link show {0}`, `ethtool -S {0}`",
            "bridge": "frames addressed to the bridge itself that nothing accepted, or netfilter",
            "veth": "the peer uses its own ring (GRO/XDP on the peer), to which netdev_max_backlog does not apply",
            "wifi": "the radio's own losses",
        }.get(iface.role if iface.role == "wifi" else iface.kind, "a driver- or device-specific limit")
        lines.append("{0}: {1} inbound drops ({2}) — {3}".format(
            _where_iface(iface), fmt_count(drops), fmt_rate(ev.rate(drops)), why.format(iface.name)))
    if ev.reasons is not None:
        lines.append("the kernel's drop reasons in the window do not account for them either: {0}".format(
            ", ".join("{0} {1}".format(reason_label(n), fmt_count(c)) for n, c in _top(ev.reasons)[:4] if c)
            or "none counted"))
    return Detection(
        summary="inbound drops on {0} that no CPU backlog accounts for".format(", ".join(i.name for i, _d in found)),
        confidence="low", confidence_reason="the interface counter does not say why it dropped",
        evidence=lines, interfaces=[i.name for i, _d in found])


# -- causes only the kernel's drop reasons tell apart -------------------------------------------

# reasons whose drops an interface's rx_dropped also counts: when they account for an
# interface's drops, their own cause reports them (not unexplained_iface_drops)
RX_DROPPED_REASONS = ("unhandled_proto", "full_ring")

# netdrops' alarms on interface drops by the chart roles they watch, in the order of their
# `families:` line (health.d/netdrops.conf) and `chart labels: role=` line (health.d/v2/netdrops.conf);
# tests/test_alarms_v2.py holds both files to this table. Other roles (bond-slave, wifi,
# loopback) have no alarm.
ALARMS_BY_ROLES = (
    (("netdrops_host_inbound_drops", "netdrops_host_inbound_drop_ratio"),
     ("physical", "bond", "vlan", "bridge", "other")),
    (("netdrops_container_inbound_drops", "netdrops_container_inbound_drop_ratio"), ("veth", "tun")),
)
INTERFACE_ALARMS = tuple(name for names, _roles in ALARMS_BY_ROLES for name in names)


def _sample_lines(ev, name, what):
    """What the detail samples of one reason saw: [line], and {key: n} of `what`
    ('protocols' or 'locations') summed over them."""
    lines, seen = [], {}
    for sample in _sampled(ev, name):
        records = sample.by_reason.get(name, 0)
        if sample.note and not records:
            lines.append("detail sample: " + sample.note)
            continue
        for key, n in getattr(sample, what).get(name, {}).items():
            seen[key] = seen.get(key, 0) + n
        lines.append("detail sample: {0} record{1} of {2} in {3:.0f} s{4}".format(
            records, "" if records == 1 else "s", reason_label(name), sample.seconds,
            " (" + sample.note + ")" if sample.note else ""))
    return lines, seen


def _receivers(ev, floor):
    return sorted(((i, _inbound_not_missed(i)) for i in ev.interfaces
                   if i.role != "bond-slave" and _inbound_not_missed(i) is not None
                   and ev.rate(_inbound_not_missed(i)) >= floor), key=lambda pair: -pair[1])


def detect_unhandled_protocol(ev, th):
    floor, agree_share = th["target_drops_per_s"], th["reasons_agree_share"]
    count = _reason(ev, "unhandled_proto")
    if count is None or ev.rate(count) < floor:
        return None
    lines = [_reason_line(ev, "unhandled_proto", count) + ": frames whose protocol nothing on this host handles"]
    backlog = ev.total("dropped") or 0
    receivers = _receivers(ev, floor)
    # the interfaces' drops other than the backlog's are the candidates
    shown = max(0.0, sum(d for _i, d in receivers) - backlog)
    for iface, drops in receivers[:5]:
        lines.append("{0}: {1} inbound drops ({2})".format(_where_iface(iface), fmt_count(drops), fmt_rate(ev.rate(drops))))
    lines.append("softnet_stat 'dropped' (CPU backlog) in the same window: {0}".format(fmt_count(backlog)))
    sample_lines, protocols = _sample_lines(ev, "unhandled_proto", "protocols")
    lines += sample_lines
    named = []
    for key, n in _top(protocols)[:4]:
        number = ethertypes.number(key)
        how = ethertypes.advice(number)
        named.append(ethertypes.name(number))
        lines.append("ethertype {0}: {1} of the sampled frames{2}".format(
            ethertypes.name(number), n, " — " + how if how else ""))
    agrees = bool(receivers) and _agree(count, shown, agree_share)
    if agrees:
        why = "the drop reason UNHANDLED_PROTO accounts for the interfaces' drops, and the CPU backlog for none"
    elif receivers:
        why = ("the drop reason UNHANDLED_PROTO ({0}) and the interfaces' drops other than the backlog's ({1}) "
               "disagree: part of the interface drops has another cause").format(fmt_count(count), fmt_count(shown))
    else:
        why = ("the drop reason names them, but no interface here shows them (an interface in another network "
               "namespace, or a frame that never reached one netdrops charts)")
    devices = [i.name for i, _d in receivers[:3]]
    return Detection(
        summary="{0} frames ({1}) of {2} were dropped because nothing on this host handles their protocol{3}".format(
            fmt_count(count), fmt_rate(ev.rate(count)), ", ".join(named) if named else "a protocol",
            " on " + ", ".join(devices) if devices else ""),
        confidence="high" if agrees else "medium", confidence_reason=why, evidence=lines,
        interfaces=devices, beyond_tuning=alarm_exclusion([i for i, _d in receivers[:3]]) or None,
        confirmed_by={"unhandled_proto": count}, reasons_agree=agrees if receivers else None)


def alarm_exclusion(ifaces):
    """The exact lines that leave these interfaces out of netdrops' interface alarms, for 1.37
    (`families:`, whose first matching word wins) and 1.38+ (`chart labels:`: v2.11 ANDs the
    labels and reads the words after `device=` as one pattern, first match wins; `device=!eth0`
    alone matches no chart, so the `*` is needed). Checked on the real 1.37 and v2.11
    (tests/test_alarms_v2.py); no other version is at hand."""
    parts = []
    for alarms, roles in ALARMS_BY_ROLES:
        picked = [i for i in ifaces if (i.role or i.kind) in roles]
        if not picked:
            continue
        names = ", ".join(i.name for i in picked)
        negated = " ".join("!{0}/{1}".format(i.role or i.kind, i.name) for i in picked)
        families = "families: {0} {1}".format(negated, " ".join(r + "/*" for r in roles))
        labels = "chart labels: role={0} device={1} *".format(" ".join(roles), " ".join("!" + i.name for i in picked))
        parts.append("To leave {0} out of {1}: on Netdata 1.37 put `{2} ` first on their `families:` line in "
                     "/etc/netdata/health.d/netdrops.conf, so it reads `{3}`; on 1.38 and later (v2 included) "
                     "make their `chart labels:` line `{4}` (the last `*` keeps every other interface of those "
                     "roles).".format(names, " and ".join(alarms), negated, families, labels))
    unwatched = [i.name for i in ifaces if not any((i.role or i.kind) in roles for _a, roles in ALARMS_BY_ROLES)]
    if unwatched:
        parts.append("No netdrops alarm watches {0} (its role has none): nothing to quiet there.".format(
            ", ".join(unwatched)))
    return " ".join(parts)


def detect_netfilter_drop(ev, th):
    floor = th["target_drops_per_s"]
    count = _reason(ev, "netfilter_drop")
    if count is None or ev.rate(count) < floor:
        return None
    lines = [_reason_line(ev, "netfilter_drop", count)]
    sample_lines, locations = _sample_lines(ev, "netfilter_drop", "locations")
    lines += sample_lines
    for where, n in _top(locations)[:3]:
        lines.append("dropped in {0}: {1} of the sampled packets".format(where, n))
    if locations:
        lines.append("the tracepoint records the dropping function, not the netfilter hook or the rule")
    return Detection(
        summary="{0} packets ({1}) were dropped by a firewall rule (netfilter)".format(fmt_count(count), fmt_rate(ev.rate(count))),
        confidence="high", confidence_reason="the kernel names the reason (NETFILTER_DROP)", evidence=lines,
        confirmed_by={"netfilter_drop": count})


def _ports(ev, name):
    ports = {}
    for sample in _sampled(ev, name):
        for port, n in sample.ports.items():
            ports[port] = ports.get(port, 0) + n
    return ports


def detect_no_socket(ev, th):
    floor = th["target_drops_per_s"]
    count = _reason(ev, "no_socket")
    if count is None or ev.rate(count) < floor:
        return None
    lines = [_reason_line(ev, "no_socket", count)]
    sample_lines, locations = _sample_lines(ev, "no_socket", "locations")
    lines += sample_lines
    ports = _ports(ev, "no_socket")
    for port, n in _top(ports)[:5]:
        lines.append("closed port {0}: {1} {2} sampled".format(
            port, n, "ICMP port-unreachable replies" if port.startswith("udp") else "TCP resets"))
    for where, n in _top(locations)[:3]:
        what = NO_SOCKET_PLACES.get(where.split("+")[0].split(".")[0], "")
        lines.append("dropped in {0}: {1} of the sampled packets{2}".format(where, n, " — " + what if what else ""))
    return Detection(
        summary="{0} packets ({1}) arrived for ports nothing listens on{2}".format(
            fmt_count(count), fmt_rate(ev.rate(count)),
            " (" + ", ".join(p for p, _n in _top(ports)[:3]) + ")" if ports else ""),
        confidence="high", confidence_reason="the kernel names the reason (NO_SOCKET)", evidence=lines,
        confirmed_by={"no_socket": count})


# where NO_SOCKET drops happen (the record's location, without offset and clone suffix)
NO_SOCKET_PLACES = {
    "__udp4_lib_rcv": "UDP to a closed port (IPv4)",
    "__udp6_lib_rcv": "UDP to a closed port (IPv6)",
    "tcp_v4_rcv": "TCP to a closed port (IPv4)",
    "tcp_v6_rcv": "TCP to a closed port (IPv6)",
    "cookie_v4_check": "the ACK of a SYN cookie no connection could be made from (a listener whose queue "
                       "was full, or a stale cookie)",
    "cookie_v6_check": "the ACK of a SYN cookie no connection could be made from (IPv6)",
}


def detect_qdisc_drop(ev, th):
    min_events, target = th["min_events"], th["target_drops_per_s"]
    count = _reason(ev, "qdisc_drop")
    if not _moved(count, min_events):
        return None
    senders = sorted((i for i in ev.interfaces if _moved(i.outbound_drops, min_events)), key=lambda i: -i.outbound_drops)
    lines = [_reason_line(ev, "qdisc_drop", count)]
    for iface in senders[:5]:
        lines.append("{0}: {1} outbound drops ({2})".format(_where_iface(iface), fmt_count(iface.outbound_drops),
                                                            fmt_rate(ev.rate(iface.outbound_drops))))
    return Detection(
        summary="{0} packets ({1}) were dropped on the way out because a queueing discipline was full{2}".format(
            fmt_count(count), fmt_rate(ev.rate(count)), " on " + ", ".join(i.name for i in senders[:3]) if senders else ""),
        confidence="high", confidence_reason="the kernel names the reason (QDISC_DROP)", evidence=lines,
        interfaces=[i.name for i in senders[:3]], confirmed_by={"qdisc_drop": count},
        criteria=[Criterion("qdisc drops (egress)", ev.rate(count), target)])


def detect_full_ring(ev, th):
    min_events, target = th["min_events"], th["target_drops_per_s"]
    count = _reason(ev, "full_ring")
    if not _moved(count, min_events):
        return None
    lossy = sorted((i for i in ev.interfaces if i.kind in ("veth", "tun")
                    and (_moved(i.inbound_drops, min_events) or _moved(i.outbound_drops, min_events))),
                   key=lambda i: -((i.inbound_drops or 0) + (i.outbound_drops or 0)))
    lines = [_reason_line(ev, "full_ring", count)]
    for iface in lossy[:5]:
        lines.append("{0}: {1} inbound, {2} outbound drops".format(
            _where_iface(iface), fmt_count(iface.inbound_drops), fmt_count(iface.outbound_drops)))
    return Detection(
        summary="{0} packets ({1}) were dropped because a device's own ring was full{2}".format(
            fmt_count(count), fmt_rate(ev.rate(count)), " on " + ", ".join(i.name for i in lossy[:3]) if lossy else ""),
        confidence="high", confidence_reason="the kernel names the reason (FULL_RING)", evidence=lines,
        interfaces=[i.name for i in lossy[:3]], confirmed_by={"full_ring": count},
        criteria=[Criterion("ring-full drops", ev.rate(count), target)])


def detect_memory_pressure(ev, th):
    min_events, target = th["min_events"], th["target_drops_per_s"]
    counts = {name: _reason(ev, name) for name in ("nomem", "proto_mem")}
    moved = {name: c for name, c in counts.items() if _moved(c, min_events)}
    if not moved:
        return None
    total = sum(moved.values())
    lines = [_reason_line(ev, name, c) for name, c in moved.items()]
    if "proto_mem" in moved:
        lines.append("PROTO_MEM: a protocol's memory limit was reached (net.ipv4.udp_mem or tcp_mem, in pages); "
                     "/proc/net/sockstat shows what the protocols hold now")
    if "nomem" in moved:
        lines.append("NOMEM: the kernel could not allocate memory for the packet")
    return Detection(
        summary="{0} packets ({1}) were dropped for lack of memory".format(fmt_count(total), fmt_rate(ev.rate(total))),
        confidence="high", confidence_reason="the kernel names the reason", evidence=lines,
        confirmed_by=moved, criteria=[Criterion("memory-pressure drops", ev.rate(total), target)])


# -- the evidence fields causes read, as a person reads them -----------------------------------

FIELD_LABELS = {
    "cpus.processed": "softnet_stat 'processed' per CPU",
    "cpus.dropped": "softnet_stat 'dropped' per CPU",
    "cpus.squeezed": "softnet_stat time_squeeze per CPU",
    "cpus.flow_limit": "softnet_stat flow_limit_count",
    "cpus.backlog_peak_pct": "the backlog length per CPU",
    "cpus.busy_pct": "per-CPU busy time",
    "cpus.softirq_pct": "per-CPU softirq time",
    "interfaces.kind": "the kind of each interface",
    "interfaces.role": "the role of each interface",
    "interfaces.rx_packets": "interface received packets",
    "interfaces.inbound_drops": "interface rx drops",
    "interfaces.outbound_drops": "interface tx drops",
    "interfaces.missed": "NIC rx_missed_errors",
    "interfaces.fifo": "NIC rx_fifo_errors",
    "interfaces.missed|interfaces.fifo": "NIC rx_missed_errors or rx_fifo_errors",
    "interfaces.rx_queues": "the RX queues of each interface",
    "interfaces.rps_masks": "the rps_cpus masks of each interface",
    "sockets.udp_rcvbuf_errors": "UDP RcvbufErrors",
    "sockets.udp_in_errors": "UDP InErrors",
    "sockets.udp_sndbuf_errors": "UDP SndbufErrors",
    "sockets.tcp_listen_overflows": "TcpExt ListenOverflows",
    "sockets.tcp_listen_drops": "TcpExt ListenDrops",
    "sockets.tcp_listen_overflows|sockets.tcp_listen_drops": "TcpExt ListenOverflows or ListenDrops",
    "tuning.netdev_max_backlog": "net.core.netdev_max_backlog",
    "tuning.netdev_budget": "net.core.netdev_budget",
    "tuning.netdev_budget_usecs": "net.core.netdev_budget_usecs",
    "tuning.rmem_default": "net.core.rmem_default",
    "tuning.rmem_max": "net.core.rmem_max",
    "tuning.wmem_default": "net.core.wmem_default",
    "tuning.wmem_max": "net.core.wmem_max",
    "udp_socket_drops": "the UDP sockets that dropped",
    "rps_interfaces": "how many interfaces have RPS on",
    "host.online_cpus": "the online CPUs",
    "host.isolated_cpus": "the isolated CPUs",
    "host.local": "whether the evidence is this machine's",
    "reasons.unhandled_proto": "the kernel's drop reasons (UNHANDLED_PROTO)",
    "reasons.qdisc_drop": "the kernel's drop reasons (QDISC_DROP)",
    "reasons.full_ring": "the kernel's drop reasons (FULL_RING)",
    "reasons.nomem|reasons.proto_mem": "the kernel's drop reasons (NOMEM, PROTO_MEM)",
    "reasons.netfilter_drop": "the kernel's drop reasons (NETFILTER_DROP)",
    "reasons.no_socket": "the kernel's drop reasons (NO_SOCKET)",
    "sockets.udp_rcvbuf_errors|reasons.socket_rcvbuff": "UDP RcvbufErrors or the drop reason SOCKET_RCVBUFF",
    "sockets.tcp_listen_overflows|sockets.tcp_listen_drops|reasons.tcp_listen_overflow":
        "TcpExt ListenOverflows or ListenDrops, or the drop reason TCP_LISTEN_OVERFLOW",
}


def has_value(ev, name):
    """Whether the source gives a value for one needs entry ("a|b": either): for a per-CPU or
    per-interface field, on at least one CPU or interface."""
    for alternative in name.split("|"):
        where, _dot, attr = alternative.rpartition(".")
        if where == "cpus" or where == "interfaces":
            if any(getattr(item, attr) is not None for item in getattr(ev, where)):
                return True
        elif where == "sockets" or where == "tuning":
            if getattr(ev, where).get(attr) is not None:
                return True
        elif where == "host":
            if getattr(ev.host, attr) is not None:
                return True
        elif where == "reasons":
            if ev.reasons is not None:   # counted: a reason not seen counts 0
                return True
        elif getattr(ev, attr) is not None:
            return True
    return False


# -- the table ---------------------------------------------------------------------------------

BACKLOG_NEAR_FULL = Threshold("backlog_near_full_pct", 50.0, "% of netdev_max_backlog",
                              "a backlog seen this full corroborates that it overflowed")
SQUEEZE_TARGET = Threshold("squeeze_target_per_s", 1.0, "/s",
                           "squeezes are not drops: on CPUs that drop, fewer than this per second pass")
MIN_CPUS_TO_SPREAD = Threshold("min_cpus_to_spread", 2, "CPUs", "RPS needs another CPU to spread work to")
MIN_PROCESSED = Threshold("min_processed_per_s", 100, "/s",
                          "below this many packets per second, how work is spread over CPUs does not matter")
HOT_CPU_SHARE = Threshold("hot_cpu_share", 0.8, "share",
                          "one CPU doing this share of all receive work is concentrated")
HOT_PAIR_SHARE = Threshold("hot_pair_share", 0.9, "share",
                           "else two CPUs count as concentrated only when together they do this share")
MIN_CPUS_FOR_A_PAIR = Threshold("min_cpus_for_a_pair", 4, "CPUs",
                                "with fewer CPUs, two doing most of the work is a fair share of the machine")
SMALL_RCVBUF_FACTOR = Threshold("small_rcvbuf_factor", 4, "x",
                                "a socket that drops holding under rmem_default / this many bytes has a small "
                                "SO_RCVBUF of its own")

_INTERFACE_DROPS = ("interfaces.inbound_drops", "interfaces.missed", "interfaces.kind", "interfaces.role")

CAUSES = (
    Cause(
        id="backlog_overflow", title="CPU backlog queue overflow", severity=PROBLEM,
        needs=("cpus.dropped",),
        reads=("cpus.backlog_peak_pct", "cpus.flow_limit", "tuning.netdev_max_backlog", "interfaces.outbound_drops",
               "sockets.udp_sndbuf_errors", "reasons.cpu_backlog") + _INTERFACE_DROPS,
        thresholds=(MIN_EVENTS, EXPLAINED_SHARE, BACKLOG_NEAR_FULL, TARGET, REASONS_AGREE),
        reason="Packets handed to a CPU (by RPS, or by a veth on the sender's CPU) wait in that CPU's "
               "backlog queue; when it holds net.core.netdev_max_backlog packets, the next ones are dropped.",
        remedies=("netdev_max_backlog",),
        beyond_tuning="If the CPU is busy all the time, a longer queue only adds latency: spread the work "
                      "(RPS over more CPUs), give the container more cores, or lower the packet rate.",
        detect=detect_backlog_overflow),
    Cause(
        id="budget_exhaustion", title="Receive budget exhausted on dropping CPUs", severity=PROBLEM,
        needs=("cpus.squeezed", "cpus.dropped"),
        reads=("tuning.netdev_budget", "tuning.netdev_budget_usecs", "reasons.cpu_backlog"),
        thresholds=(MIN_EVENTS, SQUEEZE_TARGET, REASONS_AGREE),
        reason="net_rx_action stops after net.core.netdev_budget packets or netdev_budget_usecs and leaves "
               "the rest queued; with the queue also overflowing, each round ends too early.",
        remedies=("netdev_budget", "netdev_budget_usecs"),
        beyond_tuning=None,
        detect=detect_budget_exhaustion),
    Cause(
        id="rx_on_one_cpu", title="Receive work on one CPU with RPS off", severity=PROBLEM,
        needs=("cpus.processed",),
        reads=("cpus.dropped", "cpus.squeezed", "cpus.busy_pct", "interfaces.kind", "interfaces.role",
               "interfaces.rx_packets", "interfaces.inbound_drops", "interfaces.rx_queues", "interfaces.rps_masks",
               "rps_interfaces", "host.online_cpus", "host.isolated_cpus", "host.local"),
        thresholds=(MIN_CPUS_TO_SPREAD, MIN_PROCESSED, HOT_CPU_SHARE, HOT_PAIR_SHARE, MIN_CPUS_FOR_A_PAIR,
                    MIN_EVENTS, SATURATED_BUSY, MIN_RX_PER_S),
        reason="A single-queue NIC interrupts one CPU, and a veth queues on the sending CPU; without RPS "
               "that CPU does all the receive work while the others idle.",
        remedies=("rps_cpus", "rps_sock_flow_entries", "rps_flow_cnt", "rps_default_mask"),
        beyond_tuning="A NIC with several hardware queues (`ethtool -L`) spreads work better than RPS.",
        detect=detect_rx_on_one_cpu),
    Cause(
        id="socket_rcvbuf_overflow", title="Socket receive buffer overflow", severity=PROBLEM,
        needs=("sockets.udp_rcvbuf_errors|reasons.socket_rcvbuff",),
        reads=("sockets.udp_rcvbuf_errors", "sockets.udp_in_errors", "cpus.dropped", "tuning.rmem_default",
               "tuning.rmem_max", "udp_socket_drops", "reasons.socket_rcvbuff"),
        thresholds=(MIN_EVENTS, SMALL_RCVBUF_FACTOR, TARGET, REASONS_AGREE),
        reason="The packets reached the socket, but the application did not read them before its receive "
               "buffer filled. This is not a backlog problem: a larger netdev_max_backlog does not help.",
        remedies=("rmem_max", "rmem_default"),
        beyond_tuning="If the application reads more slowly than packets arrive on average, any buffer "
                      "fills: it needs to read faster (more reader threads, SO_REUSEPORT, recvmmsg). An "
                      "application that sets SO_RCVBUF itself ignores rmem_default and is capped by rmem_max.",
        detect=detect_socket_rcvbuf),
    Cause(
        id="socket_sndbuf_overflow", title="Socket send buffer overflow", severity=PROBLEM,
        needs=("sockets.udp_sndbuf_errors",),
        reads=("cpus.dropped", "interfaces.kind", "interfaces.outbound_drops", "tuning.wmem_default", "tuning.wmem_max"),
        thresholds=(MIN_EVENTS, EXPLAINED_SHARE, TARGET),
        reason="An application sent faster than its socket's send buffer drained.",
        remedies=("wmem_max", "wmem_default"),
        beyond_tuning="An application that sets SO_SNDBUF itself is capped by wmem_max.",
        detect=detect_socket_sndbuf),
    Cause(
        id="listen_queue_overflow", title="TCP accept queue overflow", severity=PROBLEM,
        needs=("sockets.tcp_listen_overflows|sockets.tcp_listen_drops|reasons.tcp_listen_overflow",),
        reads=("sockets.tcp_listen_overflows", "sockets.tcp_listen_drops", "reasons.tcp_listen_overflow"),
        thresholds=(MIN_EVENTS, TARGET, REASONS_AGREE),
        reason="New connections arrived faster than the application accepted them.",
        remedies=(),
        beyond_tuning="No receive-path sysctl here fixes this: the application must accept faster, or pass "
                      "a larger backlog to listen() (capped by net.core.somaxconn in its network namespace).",
        detect=detect_listen_overflow),
    Cause(
        id="nic_loss", title="NIC-level loss (ring full)", severity=PROBLEM,
        needs=("interfaces.missed|interfaces.fifo",),
        reads=("interfaces.kind", "interfaces.missed", "interfaces.fifo"),
        thresholds=(MIN_EVENTS, TARGET),
        reason="The NIC had no free descriptor in its RX ring when a packet arrived, so the packet never "
               "reached the kernel. No net.core sysctl changes this.",
        remedies=(),
        beyond_tuning="Enlarge the NIC's RX ring and spread its interrupts over more CPUs.",
        detect=detect_nic_loss),
    Cause(
        id="unhandled_protocol", title="Frames of a protocol nothing on this host handles", severity=PROBLEM,
        needs=("reasons.unhandled_proto",),
        reads=("cpus.dropped", "reason_samples") + _INTERFACE_DROPS,
        thresholds=(TARGET, REASONS_AGREE),
        reason="The frames reached the kernel, but no protocol handler here takes their ethertype (LLDP or STP "
               "from a switch, IPv6 on a host booted with IPv6 off, a vendor's discovery protocol): the kernel "
               "frees them and counts them in the interface's rx_dropped. Harmless: nothing here wanted them, "
               "and netdev_max_backlog has nothing to do with it.",
        remedies=(),
        beyond_tuning="No sysctl changes this, and none should be changed. To keep netdrops' interface alarms ("
                      + ", ".join(INTERFACE_ALARMS) + ") quiet for these frames: stop the sender (turn LLDP/CDP or "
                      "STP off on the switch port facing the host, or run lldpd so LLDP frames are handled), or "
                      "leave the interface out of those alarms.",
        detect=detect_unhandled_protocol),
    Cause(
        id="qdisc_drop", title="Egress queueing discipline full", severity=PROBLEM,
        needs=("reasons.qdisc_drop",),
        reads=("interfaces.outbound_drops", "interfaces.kind", "interfaces.role"),
        thresholds=(MIN_EVENTS, TARGET),
        reason="Packets being sent waited in an interface's queueing discipline (qdisc), which was full: the "
               "kernel dropped them on the way out. Receive-side settings (netdev_max_backlog) do not apply.",
        remedies=(),
        beyond_tuning="`tc -s qdisc show dev DEV` shows which queue drops; raise its limit (`ip link set DEV "
                      "txqueuelen N` for pfifo_fast, `tc qdisc change dev DEV root fq_codel limit N`), or have the "
                      "sender pace itself.",
        detect=detect_qdisc_drop),
    Cause(
        id="ring_full", title="A device's own ring full (veth with GRO/XDP, tun/tap)", severity=PROBLEM,
        needs=("reasons.full_ring",),
        reads=("interfaces.kind", "interfaces.role", "interfaces.inbound_drops", "interfaces.outbound_drops"),
        thresholds=(MIN_EVENTS, TARGET),
        reason="The packet was handed to a device whose own ring was full: a veth with NAPI on (GRO or an XDP "
               "program) queues in a fixed ring of 256 frames instead of the CPU backlog; a tun/tap queues for "
               "its reader (a VM). netdev_max_backlog does not apply to either.",
        remedies=(),
        beyond_tuning="For a veth: turn GRO off on it (`ethtool -K DEV gro off`) unless an XDP program needs it, "
                      "or give the receiving side more CPU; for a tun/tap: the reader (VM, VPN daemon) is too slow, "
                      "or raise the device's `txqueuelen`.",
        detect=detect_full_ring),
    Cause(
        id="memory_pressure", title="Drops for lack of memory", severity=PROBLEM,
        needs=("reasons.nomem|reasons.proto_mem",),
        reads=("reasons.nomem", "reasons.proto_mem"),
        thresholds=(MIN_EVENTS, TARGET),
        reason="The kernel could not allocate memory for the packet (NOMEM), or a protocol had used all the "
               "memory its limit allows (PROTO_MEM: net.ipv4.udp_mem, tcp_mem). No net.core setting helps.",
        remedies=(),
        beyond_tuning="Find what holds the memory before raising a limit: `cat /proc/net/sockstat` (pages each "
                      "protocol holds against udp_mem/tcp_mem), `ss -tunm` (per-socket buffers); for NOMEM, "
                      "`free -m`, /proc/buddyinfo and vm.min_free_kbytes.",
        detect=detect_memory_pressure),
    Cause(
        id="cpu_saturated", title="CPU saturated while dropping", severity=PROBLEM,
        needs=("cpus.busy_pct",),
        reads=("cpus.dropped", "cpus.squeezed", "cpus.softirq_pct", "cpus.nice_pct", "reasons.cpu_backlog"),
        thresholds=(MIN_EVENTS, SATURATED_BUSY, REASONS_AGREE),
        reason="The CPU that receives is busy all the time with work receive processing competes with (time at "
               "nice > 0 is not counted: softirq preempts it); queues and budgets only move the loss around.",
        remedies=(),
        beyond_tuning="More CPU for the receive path: RPS to idle CPUs, more cores for the container or VM, "
                      "or less work per packet (fewer netfilter rules, no needless packet capture).",
        detect=detect_cpu_saturated),
    Cause(
        id="squeeze_without_drops", title="Budget squeezes without drops", severity=NOTE,
        needs=("cpus.squeezed",),
        reads=("cpus.dropped",),
        thresholds=(MIN_EVENTS,),
        reason="time_squeeze counts softirq rounds that ended with work left; the work continues in the "
               "next round. Without drops it is not a loss.",
        remedies=(), beyond_tuning=None,
        detect=detect_squeeze_without_drops),
    Cause(
        id="netfilter_drop", title="Packets a firewall rule dropped", severity=NOTE,
        needs=("reasons.netfilter_drop",),
        reads=("reason_samples",),
        thresholds=(TARGET,),
        reason="A netfilter rule (nftables or iptables) dropped these packets on purpose: this is the "
               "firewall's decision, not a lack of capacity, and no tuning changes it.",
        remedies=(),
        beyond_tuning="If these packets should arrive, the rule is the fix: `nft list ruleset` (rules with a "
                      "`counter` show which matched; add `counter` to a drop rule to see), `iptables-save -c` for "
                      "iptables; a container's rules live in its namespace (`ip netns exec NAME nft list ruleset`, "
                      "`nsenter -t PID -n nft list ruleset`).",
        detect=detect_netfilter_drop),
    Cause(
        id="no_socket", title="Packets to ports nothing listens on", severity=NOTE,
        needs=("reasons.no_socket",),
        reads=("reason_samples",),
        thresholds=(TARGET,),
        reason="Packets arrived for a port no socket is bound to (UDP answers with ICMP port unreachable, "
               "TCP with a reset): a service that is down, a client with a stale address, or a scan. No "
               "setting here changes it.",
        remedies=(),
        beyond_tuning="Start the service that should listen there, or stop the sender; `ss -lunt` lists what "
                      "listens; `nstat -az UdpNoPorts` counts the UDP ones.",
        detect=detect_no_socket),
    Cause(
        id="unexplained_iface_drops", title="Interface drops the backlog does not explain", severity=NOTE,
        needs=("interfaces.inbound_drops",),
        reads=("cpus.dropped", "reasons.unhandled_proto", "reasons.full_ring") + _INTERFACE_DROPS,
        thresholds=(TARGET, EXPLAINED_SHARE),
        reason="An interface's rx_dropped also counts frames the stack discards on purpose.",
        remedies=(), beyond_tuning=None,
        detect=detect_unexplained_iface_drops),
)


def diagnose(evidence):
    """Evidence -> Diagnosis: findings (problems first, in table order) and the causes whose
    needed evidence the source does not give (not run, so never a guess)."""
    findings, not_assessed = [], []
    for cause in CAUSES:
        missing = tuple(name for name in cause.needs if not has_value(evidence, name))
        if missing:
            not_assessed.append(NotAssessed(cause, missing))
            continue
        detection = cause.detect(evidence, cause.limits)
        if detection is not None:
            findings.append(Finding(cause, detection))
    return Diagnosis(sorted(findings, key=lambda f: f.cause.severity != PROBLEM), not_assessed)
