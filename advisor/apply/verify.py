"""--verify: the drop rates before and after a change, as the runbook's success table
(metric, before, target, after, pass or fail); the target is < 0.5 drops/s.

"before" is the diagnosis window that led to the change (kept in the snapshot, so a later
`--verify` compares against it too); "after" is measured here over a window that starts after
the change, through the same model: the collector's core ticks at both ends and the window is
the difference of its two snapshots (softnet_stat column 2 per CPU, an interface's inbound
drops as rx_dropped + rx_missed_errors, UDP RcvbufErrors), so before and after are one sum.
"""

import time
from dataclasses import dataclass
from typing import Optional

from netdrops_collector import config, model
from netdrops_collector.core import Collector
from netdrops_collector.errors import ParseError

from ..diagnose.diagnosis import TARGET_DROPS_PER_S, fmt_rate

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


def counts(metrics, window):
    """{metric name: count over the window} from a model.Window (None where it cannot tell):
    CPUs' softnet drops, an interface's inbound drops (rx_dropped + rx_missed_errors, the sum
    "before" is, as the core counts it), UDP RcvbufErrors (pure)."""
    out = {}
    for m in metrics:
        if m.kind == "softnet":
            dropped = [c.dropped for c in window.cpus if m.cpu is None or c.cpu == m.cpu]
            out[m.metric] = sum(dropped) if dropped else None
        elif m.kind == "iface":
            iface = window.iface(m.device)
            out[m.metric] = iface.inbound if iface is not None else None
        else:
            out[m.metric] = window.sockets.get("udp_rcvbuf_errors")
    return out


def measure(hostfs, metrics, seconds, clock=time.monotonic, sleep=time.sleep, source=None):
    """Fill in each metric's `after` rate over `seconds` from now, through the collector's core
    (its snapshots at both ends, the same counters and sums the diagnosis window had). The
    interfaces to verify get charts from the start, so all their drops are counted. `source` is
    the core's interface source (its own choice when None)."""
    devices = [m.device for m in metrics if m.kind == "iface"]
    window = None
    start = clock()
    try:
        collector = Collector(config.build({"chart_interfaces": devices, "exclude_interfaces": []}),
                              hostfs=hostfs, source=source)
    except (OSError, ParseError):
        collector = None
    if collector is not None:
        try:
            collector.collect()
            start = clock()
            first = collector.snapshot(start)
            sleep(seconds)
            collector.collect()
            window = model.delta(first, collector.snapshot(clock()))
        except (OSError, ParseError):
            window = None
        finally:
            collector.close()
    else:
        sleep(seconds)
    elapsed = max(window.seconds if window is not None else clock() - start, 1e-9)
    found = counts(metrics, window) if window is not None else {}
    for m in metrics:
        count = found.get(m.metric)
        m.after = None if count is None else count / elapsed
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
