"""--verify: the drop rates before and after a change, as the runbook's success table
(metric, before, target, after, pass or fail); the target is < 0.5 drops/s.

"before" is the diagnosis window that led to the change (kept in the snapshot, so a later
`--verify` compares against it too); "after" is measured here, from the kernel's own counters
(softnet_stat column 2 per CPU, the interfaces' rx_dropped, UDP RcvbufErrors), over a window
that starts after the change.
"""

import time
from dataclasses import dataclass
from typing import Optional

from netdrops_collector import snmp, softnet
from netdrops_collector.counters import WRAP32
from netdrops_collector.errors import ParseError

from .diagnosis import TARGET_DROPS_PER_S, fmt_rate

ALL_CPUS = "backlog drops, all CPUs"
UDP_ROW = "UDP receive-buffer errors"


@dataclass
class Metric:
    metric: str
    kind: str                       # softnet, iface, udp_rcvbuf
    cpu: Optional[int] = None       # softnet: None = all CPUs
    device: Optional[str] = None    # iface
    before: Optional[float] = None  # per second
    after: Optional[float] = None

    @property
    def passed(self):
        return self.after is not None and self.after < TARGET_DROPS_PER_S

    def to_dict(self):
        return {"metric": self.metric, "kind": self.kind, "cpu": self.cpu, "device": self.device,
                "before": self.before}

    @classmethod
    def from_dict(cls, doc):
        return cls(doc["metric"], doc["kind"], doc.get("cpu"), doc.get("device"), doc.get("before"))


def _rate(count, seconds):
    return None if count is None or not seconds else count / seconds


def metrics_from_report(report):
    """The rows to verify: all CPUs, then the CPUs, interfaces and sockets of the problems found."""
    ev = report.evidence
    rows = [Metric(ALL_CPUS, "softnet", before=ev.rate(ev.total("dropped")))]
    problems = report.problems
    for cpu_id in sorted({c for f in problems for c in f.detection.cpus if c >= 0}):
        cpu = ev.cpu(cpu_id)
        rows.append(Metric("backlog drops, CPU {0}".format(cpu_id), "softnet", cpu=cpu_id,
                           before=ev.rate(cpu.dropped) if cpu else None))
    for name in dict.fromkeys(n for f in problems for n in f.detection.interfaces):
        iface = ev.iface(name)
        rows.append(Metric("inbound drops, {0}".format(name), "iface", device=name,
                           before=ev.rate(iface.inbound_drops) if iface else None))
    if any(f.cause.id == "socket_rcvbuf_overflow" for f in problems):
        rows.append(Metric(UDP_ROW, "udp_rcvbuf", before=ev.rate(ev.sockets.get("udp_rcvbuf_errors"))))
    return rows


def metrics_from_json(doc):
    """The same rows from a saved `--json` report."""
    ev = doc.get("evidence") or {}
    seconds = (doc.get("window") or {}).get("seconds")
    cpus = {c["cpu"]: c for c in ev.get("cpus", [])}
    dropped = [c.get("dropped") for c in cpus.values() if c.get("dropped") is not None]
    rows = [Metric(ALL_CPUS, "softnet", before=_rate(sum(dropped), seconds) if dropped else None)]
    problems = [f for f in doc.get("findings", []) if f.get("severity") == "problem"]
    for cpu_id in sorted({c for f in problems for c in f.get("cpus", []) if c >= 0}):
        rows.append(Metric("backlog drops, CPU {0}".format(cpu_id), "softnet", cpu=cpu_id,
                           before=_rate((cpus.get(cpu_id) or {}).get("dropped"), seconds)))
    ifaces = {i["name"]: i for i in ev.get("interfaces", [])}
    for name in dict.fromkeys(n for f in problems for n in f.get("interfaces", [])):
        rows.append(Metric("inbound drops, {0}".format(name), "iface", device=name,
                           before=_rate((ifaces.get(name) or {}).get("inbound_drops"), seconds)))
    if any(f.get("id") == "socket_rcvbuf_overflow" for f in problems):
        rows.append(Metric(UDP_ROW, "udp_rcvbuf",
                           before=_rate((ev.get("sockets") or {}).get("udp_rcvbuf_errors"), seconds)))
    return rows


def read_counters(hostfs, metrics):
    """{metric name: counter now} (None where it cannot be read)."""
    out = {}
    try:
        rows = softnet.read_softnet(hostfs)
    except (OSError, ParseError):
        rows = None
    udp = None
    if any(m.kind == "udp_rcvbuf" for m in metrics):
        try:
            udp = snmp.read_socket_drops(hostfs).get("udp_rcvbuf_errors")
        except (OSError, ParseError):
            udp = None
    for m in metrics:
        if m.kind == "softnet":
            if rows is None:
                out[m.metric] = None
            elif m.cpu is None:
                out[m.metric] = {r.cpu: r.dropped for r in rows}
            else:
                out[m.metric] = {r.cpu: r.dropped for r in rows if r.cpu == m.cpu} or None
        elif m.kind == "iface":
            text = None
            try:
                text = hostfs.read_value("sys/class/net", m.device, "statistics/rx_dropped")
            except OSError:
                pass
            out[m.metric] = int(text) if text and text.isdigit() else None
        else:
            out[m.metric] = udp
    return out


def _delta(before, after):
    if before is None or after is None:
        return None
    if isinstance(before, dict):
        if set(before) != set(after):
            common = set(before) & set(after)   # a CPU went offline or came online
            before = {c: before[c] for c in common}
            after = {c: after[c] for c in common}
        return sum((after[c] - before[c]) % WRAP32 for c in before)
    return max(0, after - before)


def measure(hostfs, metrics, seconds, clock=time.monotonic, sleep=time.sleep):
    """Fill in each metric's `after` rate over `seconds` from now."""
    start_counters, start = read_counters(hostfs, metrics), clock()
    sleep(seconds)
    end_counters, end = read_counters(hostfs, metrics), clock()
    elapsed = max(end - start, 1e-9)
    for m in metrics:
        delta = _delta(start_counters.get(m.metric), end_counters.get(m.metric))
        m.after = None if delta is None else delta / elapsed
    return elapsed


def render_table(metrics, seconds):
    header = ("metric", "before", "target", "after", "result")
    rows = [(m.metric, fmt_rate(m.before), "< {0:g}/s".format(TARGET_DROPS_PER_S), fmt_rate(m.after),
             "pass" if m.passed else "FAIL") for m in metrics]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    out = ["Success criteria (after: measured over {0:.0f} s after the change):".format(seconds)]
    for row in [header] + rows:
        out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if all(m.passed for m in metrics):
        out.append("Verified: every drop rate is now below {0:g}/s.".format(TARGET_DROPS_PER_S))
    else:
        failed = ", ".join(m.metric for m in metrics if not m.passed)
        out.append("Not verified: {0} still at or above {1:g}/s (or unreadable). The change may need "
                   "longer, another step (run the advisor again), or it cannot help; "
                   "`netdrops-advisor --rollback` undoes it.".format(failed, TARGET_DROPS_PER_S))
    return "\n".join(out) + "\n"


def exit_code(metrics):
    return 0 if all(m.passed for m in metrics) else 1
