"""Recommendations: for each finding's remedies, the setting, its current value, the new value,
why, and the expected effect.

Every remedy is declared once in REMEDIES. Values only ever go up, one rung of a ladder at a
time (the seed runbook's netdev_max_backlog 1000 -> 5000 is the model); a setting already at
its top rung gets no recommendation, and the finding's "beyond tuning" text says what would help.

A Recommendation is what `--apply` (issue 5) consumes: kind (sysctl or sysfs), the exact path,
current and new values as the kernel shows them, value_type, raise_only and host_only (the
remedy's: declared once in REMEDIES).
"""

import shlex
from dataclasses import dataclass
from typing import Callable, Optional

from netdrops_collector.kernel.tuning import format_cpu_mask, parse_cpu_mask

from .diagnosis import KERNEL_DEFAULTS, MIN_CPUS_TO_SPREAD, TARGET, cpu_name

KIB = 1024
MIB = 1024 * KIB

LADDERS = {
    "netdev_max_backlog": (1000, 5000, 10000, 20000, 50000, 100000),
    "netdev_budget": (300, 600, 1200, 2400),
    "netdev_budget_usecs": (2000, 4000, 8000, 16000, 32000),
    "rmem_max": (4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB),
    "rmem_default": (1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB),
    "wmem_max": (4 * MIB, 8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB),
    "wmem_default": (1 * MIB, 2 * MIB, 4 * MIB, 8 * MIB),
}

RFS_SOCK_FLOW_ENTRIES = 32768  # the kernel documentation's suggested starting point
MIN_BUDGET_JIFFIES = 2         # since 6.14 the kernel refuses a netdev_budget_usecs below two jiffies


@dataclass
class Recommendation:
    id: str                  # unique: the sysctl name, or the sysfs path
    cause: str               # the finding (diagnosis cause id) it answers
    kind: str                # "sysctl" or "sysfs"
    setting: str             # net.core.netdev_max_backlog, or rps_cpus of DEV rx-N
    path: str                # the file --apply writes
    device: Optional[str]
    current: Optional[str]   # as the kernel shows it; None when it could not be read
    new: str
    value_type: str          # "int" or "cpumask" (hex, CPU0 = bit 0, comma-separated 32-bit groups)
    reason: str
    expected_effect: str
    host_only: bool          # only the host (initial network namespace) can change it
    raise_only: bool         # an applier must never lower it

    @property
    def command(self):
        """The line a person runs to change it now."""
        if self.kind == "sysctl":
            return "sysctl -w {0}={1}".format(self.setting, self.new)
        return "echo {0} > {1}".format(self.new, shlex.quote(self.path))

    @property
    def sysctl_conf_line(self):
        """The line that keeps it across reboots (a file under /etc/sysctl.d/)."""
        if self.kind != "sysctl":
            return None
        return "{0} = {1}".format(self.setting, self.new)


@dataclass(frozen=True)
class Remedy:
    id: str
    setting: str
    host_only: bool   # only the host (initial network namespace) can change it: its recommendations say so
    build: Callable   # (remedy, evidence, finding, host) -> [Recommendation]


def next_rung(ladder, current):
    """The smallest rung above current; None when current is already at or above the top."""
    for rung in ladder:
        if current is None or rung > current:
            return rung
    return None


def _sysctl(remedy, key, cause, current, new, reason, effect):
    return Recommendation(
        id="net.core." + key, cause=cause, kind="sysctl", setting="net.core." + key,
        path="/proc/sys/net/core/" + key, device=None,
        current=None if current is None else str(current), new=str(new), value_type="int",
        reason=reason, expected_effect=effect, host_only=remedy.host_only, raise_only=True)


def _step(ev, key):
    """(current, new) for a laddered sysctl, or None when there is no higher rung."""
    current = ev.tuning.get(key)
    base = current if current is not None else KERNEL_DEFAULTS.get(key)
    new = next_rung(LADDERS[key], base)
    if new is None:
        return None
    return current, new


# -- builders ----------------------------------------------------------------------------------

def build_backlog(remedy, ev, finding, host):
    step = _step(ev, "netdev_max_backlog")
    if step is None:
        return []
    current, new = step
    det = finding.detection
    cpus = ", ".join(cpu_name(c) for c in det.cpus)
    reason = "{0} dropped packets because its backlog queue was full ({1}).".format(
        cpus, "{0} packets".format(current) if current is not None else "its limit cannot be read from here")
    default = KERNEL_DEFAULTS["netdev_max_backlog"]
    if current is not None and current < default:
        reason += " That is below the kernel default of {0}.".format(default)
    effect = ("Each CPU queues up to {0} packets before dropping, so bursts of that size are absorbed; "
              "the drops on {1} should fall below {2}/s unless the CPU itself is saturated. Costs at "
              "most the memory of the queued packets, and latency while a queue is long.").format(
                  new, cpus, TARGET.value)
    return [_sysctl(remedy, "netdev_max_backlog", finding.id, current, new, reason, effect)]


def build_budget(remedy, ev, finding, host):
    step = _step(ev, "netdev_budget")
    if step is None:
        return []
    current, new = step
    return [_sysctl(remedy, "netdev_budget", finding.id, current, new,
                    "The receive softirq ran out of its packet budget on CPUs that were dropping.",
                    "Each softirq round may process up to {0} packets before yielding: fewer squeezes "
                    "and a backlog that empties faster, at the cost of longer softirq bursts.".format(new))]


def build_budget_usecs(remedy, ev, finding, host):
    current = ev.tuning.get("netdev_budget_usecs")
    if current is None:
        return []  # the default depends on HZ: without the current value there is no safe step
    new = next_rung(LADDERS["netdev_budget_usecs"], current)
    if host.hz:
        new = max(new or 0, MIN_BUDGET_JIFFIES * 1000000 // host.hz) if new else None
    if new is None or new <= current:
        return []
    return [_sysctl(remedy, "netdev_budget_usecs", finding.id, current, new,
                    "The receive softirq also stops after netdev_budget_usecs; raised with the packet budget.",
                    "Softirq rounds may run up to {0} µs, so the packet budget is not cut short by time.".format(new))]


def _buffer_builder(key, what, direction):
    def build(remedy, ev, finding, host):
        step = _step(ev, key)
        if step is None:
            return []
        current, new = step
        if key.endswith("_default"):
            # a default above the maximum would be capped: keep it at or below the (new) maximum
            max_key = key.replace("_default", "_max")
            max_now = ev.tuning.get(max_key) or KERNEL_DEFAULTS[max_key]
            max_new = next_rung(LADDERS[max_key], max_now) or max_now
            if new > max_new:
                return []
            effect = ("Sockets that do not set {0} themselves get {1} bytes of {2} buffer instead of {3}.").format(
                "SO_RCVBUF" if direction == "receive" else "SO_SNDBUF", new, direction, current)
        else:
            effect = ("Applications that set {0} may ask for up to {1} bytes (was {2}).").format(
                "SO_RCVBUF" if direction == "receive" else "SO_SNDBUF", new, current)
        return [_sysctl(remedy, key, finding.id, current, new,
                        "Datagrams were dropped because a socket's {0} buffer was full ({1}).".format(direction, what),
                        effect + " Bursts up to the buffer size are kept instead of dropped.")]
    return build


def _rps_mask_for(iface, host):
    cpus = host.usable_cpus or []
    if iface.numa_cpus:
        local = [c for c in cpus if c in set(iface.numa_cpus)]
        cpus = local if len(local) >= MIN_CPUS_TO_SPREAD.value else cpus
    mask = 0
    for cpu in cpus:
        mask |= 1 << cpu
    return mask, cpus


def _ncpus(host):
    return max(host.online_cpus) + 1 if host.online_cpus else 1


def _rps_targets(ev, finding, host):
    """(iface, mask, cpus) for each interface of the finding RPS can spread (local evidence only)."""
    out = []
    for name in finding.detection.interfaces:
        iface = ev.iface(name)
        if iface is None or not iface.rps_masks or not host.local:
            continue
        mask, cpus = _rps_mask_for(iface, host)
        if len(cpus) >= MIN_CPUS_TO_SPREAD.value:
            out.append((iface, mask, cpus))
    return out


def build_rps(remedy, ev, finding, host):
    recs = []
    for iface, mask, cpus in _rps_targets(ev, finding, host):
        text = format_cpu_mask(mask, _ncpus(host))
        for queue, current in enumerate(iface.rps_masks):
            if parse_cpu_mask(current):
                continue
            path = "/sys/class/net/{0}/queues/rx-{1}/rps_cpus".format(iface.name, queue)
            recs.append(Recommendation(
                id=path, cause=finding.id, kind="sysfs", setting="rps_cpus of {0} rx-{1}".format(iface.name, queue),
                path=path, device=iface.name, current=current, new=text, value_type="cpumask",
                reason="{0} has {1} RX queue{2} and RPS off, so one CPU does its receive work.".format(
                    iface.name, iface.rx_queues, "" if iface.rx_queues == 1 else "s"),
                expected_effect="Receive processing for {0} spreads over CPUs {1}{2}.".format(
                    iface.name, ",".join(map(str, cpus)),
                    " (isolated CPUs {0} left out)".format(",".join(map(str, host.isolated_cpus))) if host.isolated_cpus else ""),
                host_only=remedy.host_only, raise_only=False))
    return recs


def build_rfs_entries(remedy, ev, finding, host):
    if not _rps_targets(ev, finding, host):
        return []
    current = ev.tuning.get("rps_sock_flow_entries")
    if current is not None and current >= RFS_SOCK_FLOW_ENTRIES:
        return []
    return [_sysctl(remedy, "rps_sock_flow_entries", finding.id, current, RFS_SOCK_FLOW_ENTRIES,
                    "RFS lets RPS send each flow to the CPU where its application reads it.",
                    "Flows are steered to the consuming application's CPU: better cache locality than "
                    "spreading by hash alone.")]


def build_rfs_flow_cnt(remedy, ev, finding, host):
    recs = []
    for iface, _mask, _cpus in _rps_targets(ev, finding, host):
        per_queue = RFS_SOCK_FLOW_ENTRIES // max(1, iface.rx_queues or 1)
        for queue, current in enumerate(iface.rps_flow_cnt or []):
            if current >= per_queue:
                continue
            path = "/sys/class/net/{0}/queues/rx-{1}/rps_flow_cnt".format(iface.name, queue)
            recs.append(Recommendation(
                id=path, cause=finding.id, kind="sysfs", setting="rps_flow_cnt of {0} rx-{1}".format(iface.name, queue),
                path=path, device=iface.name, current=str(current), new=str(per_queue), value_type="int",
                reason="RFS needs a per-queue flow table: rps_sock_flow_entries / RX queues = {0}.".format(per_queue),
                expected_effect="RFS takes effect on {0} rx-{1}.".format(iface.name, queue),
                host_only=remedy.host_only, raise_only=True))
    return recs


def build_rps_default_mask(remedy, ev, finding, host):
    """Veths come and go: on 6.3+ rps_default_mask gives new ones RPS from birth."""
    targets = [t for t in _rps_targets(ev, finding, host) if t[0].kind == "veth"]
    current = ev.tuning.get("rps_default_mask")
    if not targets or current is None or parse_cpu_mask(current):
        return []
    mask = targets[0][1]
    return [Recommendation(
        id="net.core.rps_default_mask", cause=finding.id, kind="sysctl", setting="net.core.rps_default_mask",
        path="/proc/sys/net/core/rps_default_mask", device=None, current=current,
        new=format_cpu_mask(mask, _ncpus(host)), value_type="cpumask",
        reason="veths created later (new containers) start with RPS off.",
        expected_effect="Every RX queue created from now on starts with this RPS mask (all new devices, not only veths).",
        host_only=remedy.host_only, raise_only=False)]


REMEDIES = {r.id: r for r in (
    Remedy("netdev_max_backlog", "net.core.netdev_max_backlog", True, build_backlog),
    Remedy("netdev_budget", "net.core.netdev_budget", True, build_budget),
    Remedy("netdev_budget_usecs", "net.core.netdev_budget_usecs", True, build_budget_usecs),
    Remedy("rmem_max", "net.core.rmem_max", True, _buffer_builder("rmem_max", "UDP RcvbufErrors", "receive")),
    Remedy("rmem_default", "net.core.rmem_default", True, _buffer_builder("rmem_default", "UDP RcvbufErrors", "receive")),
    Remedy("wmem_max", "net.core.wmem_max", True, _buffer_builder("wmem_max", "UDP SndbufErrors", "send")),
    Remedy("wmem_default", "net.core.wmem_default", True, _buffer_builder("wmem_default", "UDP SndbufErrors", "send")),
    Remedy("rps_cpus", "/sys/class/net/DEV/queues/rx-N/rps_cpus", False, build_rps),
    Remedy("rps_sock_flow_entries", "net.core.rps_sock_flow_entries", True, build_rfs_entries),
    Remedy("rps_flow_cnt", "/sys/class/net/DEV/queues/rx-N/rps_flow_cnt", False, build_rfs_flow_cnt),
    Remedy("rps_default_mask", "net.core.rps_default_mask", True, build_rps_default_mask),
)}


def recommend(evidence, findings):
    """[Recommendation] for the problems found; one per setting (the first cause wins)."""
    recs = []
    seen = set()
    for finding in findings:
        if finding.cause.severity != "problem":
            continue
        for remedy_id in finding.cause.remedies:
            remedy = REMEDIES[remedy_id]
            for rec in remedy.build(remedy, evidence, finding, evidence.host):
                if rec.id not in seen:
                    seen.add(rec.id)
                    recs.append(rec)
    return recs
