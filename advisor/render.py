"""Reports as text for people and as JSON for scripts.

The JSON layout is a contract (schema "netdrops-advisor/1", documented in advisor/SCHEMA.md):
keys are never removed or renamed within it, new ones may be added; the *_KEYS tuples below are
what the tests hold the output to.
"""

import json
import textwrap

from .diagnose.diagnosis import fmt_rate
from .apply.persist import DROPIN
from .report import ERROR, HEALTHY, PROBLEMS

SCHEMA = "netdrops-advisor/1"

REPORT_KEYS = ("schema", "status", "exit_code", "node", "error", "source", "window", "findings",
               "not_assessed", "recommendations", "success_criteria", "run_on_host", "notes", "alarms", "evidence")
SOURCE_KEYS = ("kind", "detail", "url", "netdata_version", "requests", "fallback_reason")
FINDING_KEYS = ("id", "title", "severity", "confidence", "confidence_reason", "summary", "evidence",
                "reason", "beyond_tuning", "cpus", "interfaces", "recommendations", "confirmed_by", "reasons_agree")
RECOMMENDATION_KEYS = ("id", "cause", "kind", "setting", "path", "device", "current", "new", "value_type",
                       "reason", "expected_effect", "host_only", "raise_only", "command", "sysctl_conf_line")
CRITERION_KEYS = ("metric", "now", "target", "unit", "met")
NOT_ASSESSED_KEYS = ("id", "title", "needs", "text")
FLEET_KEYS = ("schema", "mode", "status", "exit_code", "url", "error", "nodes")

WIDTH = 100


# -- JSON --------------------------------------------------------------------------------------

def _round(value, digits=3):
    return None if value is None else round(value, digits)


def finding_to_dict(finding, recs, rate=lambda count: None):
    """`rate`: count over the window -> per second (Evidence.rate)."""
    det = finding.detection
    beyond = " ".join(t for t in (finding.cause.beyond_tuning, det.beyond_tuning) if t) or None
    return {
        "id": finding.cause.id,
        "title": finding.cause.title,
        "severity": finding.cause.severity,
        "confidence": det.confidence,
        "confidence_reason": det.confidence_reason,
        "summary": det.summary,
        "evidence": list(det.evidence),
        "reason": finding.cause.reason,
        "beyond_tuning": beyond,
        "cpus": list(det.cpus),
        "interfaces": list(det.interfaces),
        "recommendations": [r.id for r in recs if r.cause == finding.cause.id],
        "confirmed_by": [{"reason": name, "drops": _round(count), "per_s": _round(rate(count))}
                         for name, count in det.confirmed_by.items()],
        "reasons_agree": det.reasons_agree,
    }


def recommendation_to_dict(rec):
    return {
        "id": rec.id, "cause": rec.cause, "kind": rec.kind, "setting": rec.setting, "path": rec.path,
        "device": rec.device, "current": rec.current, "new": rec.new, "value_type": rec.value_type,
        "reason": rec.reason, "expected_effect": rec.expected_effect, "host_only": rec.host_only,
        "raise_only": rec.raise_only, "command": rec.command, "sysctl_conf_line": rec.sysctl_conf_line,
    }


def not_assessed_to_dict(item):
    return {"id": item.id, "title": item.cause.title, "needs": list(item.missing), "text": item.sentence}


def criterion_to_dict(row):
    return {"metric": row.metric, "now": _round(row.now), "target": row.target, "unit": row.unit, "met": row.met}


def report_to_dict(report):
    ev = report.evidence
    doc = dict.fromkeys(REPORT_KEYS)
    doc.update(schema=SCHEMA, status=report.status, exit_code=report.exit_code, node=report.node,
               error=report.error, findings=[], not_assessed=[], recommendations=[], success_criteria=[], notes=[],
               alarms=[], run_on_host=report.run_on_host)
    if ev is None:
        if report.fallback_reason:
            doc["source"] = dict.fromkeys(SOURCE_KEYS)
            doc["source"]["fallback_reason"] = report.fallback_reason
        return doc
    doc["source"] = {"kind": ev.source, "detail": ev.source_detail, "url": ev.url,
                     "netdata_version": ev.netdata_version, "requests": ev.requests,
                     "fallback_reason": report.fallback_reason}
    doc["window"] = {"seconds": _round(ev.window_seconds), "start": ev.start_time, "end": ev.end_time}
    doc["findings"] = [finding_to_dict(f, report.recommendations, ev.rate) for f in report.findings]
    doc["not_assessed"] = [not_assessed_to_dict(n) for n in report.not_assessed]
    doc["recommendations"] = [recommendation_to_dict(r) for r in report.recommendations]
    doc["success_criteria"] = [criterion_to_dict(c) for c in report.criteria]
    doc["notes"] = list(ev.notes)
    evidence = ev.to_dict()
    doc["alarms"] = evidence.pop("alarms")
    for key in ("node", "source", "source_detail", "url", "netdata_version", "notes", "requests",
                "window_seconds", "start_time", "end_time"):
        evidence.pop(key, None)
    doc["evidence"] = evidence
    return doc


def fleet_to_dict(url, reports, status, exit_code, error=None):
    return {"schema": SCHEMA, "mode": "all-nodes", "status": status, "exit_code": exit_code, "url": url,
            "error": error, "nodes": [report_to_dict(r) for r in reports]}


def to_json(doc):
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


# -- text --------------------------------------------------------------------------------------

def _wrap(text, indent, width=WIDTH):
    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  " + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return lines


def _where_drops(ev):
    """'Where the drops are': inbound drops by kind of interface."""
    by_kind = ev.drops_by_kind
    if by_kind is None:
        by_kind = {}
        for iface in ev.interfaces:
            if iface.inbound_drops is not None:
                by_kind[iface.kind] = by_kind.get(iface.kind, 0.0) + iface.inbound_drops
    if not by_kind:
        return None
    names = (("physical", "physical NICs"), ("veth", "container veths"), ("bridge", "bridges"),
             ("bond", "bonds"), ("vlan", "VLANs"), ("tun", "tun/tap"), ("other", "other"))
    parts = ["{0} {1}".format(label, fmt_rate(ev.rate(by_kind.get(kind, 0.0)))) for kind, label in names
             if kind in by_kind and (by_kind[kind] or kind in ("physical", "veth", "bridge"))]
    return ", ".join(parts)


def _current(rec, ev):
    if rec.current is not None:
        return rec.current
    return "unknown"


def _reasons_line(ev):
    """'Drop reasons (kernel, over the window): cpu_backlog 31.2/s, other 0.10/s' or None."""
    if ev.reasons is None:
        return None
    ranked = sorted(((n, c) for n, c in ev.reasons.items() if c), key=lambda kv: -kv[1])
    where = "counted live over the window" if ev.reasons_source == "kernel" else "from netdrops.drop_reasons"
    return "Drop reasons ({0}, per second): {1}".format(
        where, ", ".join("{0} {1}".format(n, fmt_rate(ev.rate(c))) for n, c in ranked) or "none")


def _not_assessed_text(items):
    """One line per cause, except the causes only drop reasons tell apart: one line for them all."""
    only_reasons = [i for i in items if all(a.startswith("reasons.") for m in i.missing for a in m.split("|"))]
    lines = ["Not assessed: {0}.".format(i.sentence) for i in items if i not in only_reasons]
    if only_reasons:
        lines.append("Not assessed (needs the kernel's drop reasons, which this source does not count): {0}.".format(
            ", ".join(i.cause.title[0].lower() + i.cause.title[1:] for i in only_reasons)))
    return lines


def render_text(report):
    ev = report.evidence
    if report.status == ERROR:
        return "netdrops-advisor: {0}\n".format(report.error)
    out = []
    out.append("netdrops-advisor: node {0}, {1:.0f} s window".format(ev.node, ev.window_seconds))
    source = "Evidence: " + ev.source_detail + "."
    if report.fallback_reason:
        source = "Evidence: {0}, so the advisor {1}.".format(report.fallback_reason.rstrip("."), ev.source_detail)
    out.append(_wrap(source, ""))
    if ev.host.in_container:
        out.append(_wrap("This runs inside a container that cannot change the host's network settings: "
                         "run the host-only commands below on the host.", ""))
    out.append("")

    problems, notes = report.problems, report.notes
    if not problems:
        out.append(_wrap("No receive-path problems: no CPU backlog, socket buffer or NIC dropped packets "
                         "in the last {0:.0f} s. Nothing to change.".format(ev.window_seconds), ""))
        out.append("")
    for n, finding in enumerate(problems, 1):
        _finding_text(out, "Problem {0}: ".format(n), finding)
    for finding in notes:
        _finding_text(out, "Note: ", finding)
    if report.not_assessed:
        for line in _not_assessed_text(report.not_assessed):
            out.append(_wrap(line, ""))
        out.append("")

    where = _where_drops(ev)
    if where:
        out.append("Where the drops are (inbound, per second): " + where)
    reasons = _reasons_line(ev)
    if reasons:
        out.append(_wrap(reasons, ""))
    if where or reasons:
        out.append("")

    out.append("Success criteria:")
    rows = [(c.metric, fmt_rate(c.now), "< {0:g}{1}".format(c.target, c.unit), "yes" if c.met else "NO")
            for c in report.criteria]
    out.extend(_table(rows, ("metric", "now", "target", "met")))
    out.append("")

    if report.recommendations:
        _recommendations_text(out, report)
    elif problems:
        out.append(_wrap("No setting here would help: see 'Beyond tuning' above.", ""))
        out.append("")

    for line in ev.notes:
        out.append(_wrap("note: " + line, ""))
    if ev.alarms:
        out.append("Active Netdata alarms:")
        for alarm in ev.alarms:
            value = "" if alarm.value is None else " = {0:g} {1}".format(alarm.value, alarm.units or "")
            out.append(_wrap("{0} {1} on {2}{3}".format(alarm.status, alarm.name, alarm.chart, value.rstrip()), "  "))
    return "\n".join(out).rstrip() + "\n"


def _finding_text(out, prefix, finding):
    det = finding.detection
    out.append(_wrap("{0}{1} (confidence {2}: {3})".format(prefix, finding.cause.title, det.confidence,
                                                             det.confidence_reason), ""))
    out.append(_wrap(det.summary[0].upper() + det.summary[1:] + ".", "  "))
    for line in det.evidence:
        out.append(_wrap("- " + line, "    "))
    out.append(_wrap("Why: " + finding.cause.reason, "  "))
    beyond = " ".join(t for t in (finding.cause.beyond_tuning, det.beyond_tuning) if t)
    if beyond and finding.cause.severity == "problem":
        out.append(_wrap("Beyond tuning: " + beyond, "  "))
    out.append("")


def _recommendations_text(out, report):
    ev = report.evidence
    recs = report.recommendations
    out.append("Recommended changes:")
    for n, rec in enumerate(recs, 1):
        label = " [host-only]" if rec.host_only else ""
        out.append("  {0}. {1}: {2} -> {3}{4}".format(n, rec.setting, _current(rec, ev), rec.new, label))
        out.append(_wrap("why: " + rec.reason, "     "))
        out.append(_wrap("expected: " + rec.expected_effect, "     "))
    out.append("")
    where = "on the host" if ev.host.in_container else (
        "on this machine" if ev.host.local else "on node {0}".format(ev.node))
    out.append("Apply now (as root {0}):".format(where))
    for rec in recs:
        out.append("  " + rec.command)
    sysctl_lines = [r.sysctl_conf_line for r in recs if r.sysctl_conf_line]
    if sysctl_lines:
        out.append("Keep across reboots ({0}):".format(DROPIN))
        for line in sysctl_lines:
            out.append("  " + line)
    if any(r.kind == "sysfs" for r in recs):
        out.append(_wrap("RPS/RFS settings under /sys are lost when the device is re-created or the "
                         "machine reboots; net.core.rps_default_mask (kernel 6.3+) covers new devices.", ""))
    if any(r.current is None for r in recs):
        out.append(_wrap("'unknown': the current value could not be read from here; read it where the "
                         "command runs (sysctl NAME) and keep the larger of the two.", ""))
    out.append("")


def render_fleet_text(url, version, reports, window):
    out = ["netdrops-advisor: {0} node{1} through {2}{3}, {4:.0f} s window".format(
        len(reports), "" if len(reports) == 1 else "s", url, " (Netdata {0})".format(version) if version else "", window)]
    rows = []
    for report in reports:
        if report.status == ERROR:
            rows.append(("ERROR", report.node, report.error))
        elif report.status == PROBLEMS:
            what = "; ".join(_short(f, report.evidence) for f in report.problems)
            nrec = len(report.recommendations)
            rows.append(("PROBLEMS", report.node, "{0} [{1} recommended change{2}]".format(
                what, nrec, "" if nrec == 1 else "s")))
        else:
            rows.append((HEALTHY, report.node, "no receive-path problems"))
    width = max(len(r[1]) for r in rows) if rows else 0
    for status, node, text in rows:
        # one line per node, however long: scripts and eyes scan these line by line
        out.append("  {0:<8}  {1:<{2}}  {3}".format(status, node, width, text))
    out.append("Run with --node NAME for one node's evidence and the exact commands.")
    return "\n".join(out) + "\n"


def _short(finding, ev):
    """'CPU backlog queue overflow on CPU 1, veth0 (28.2/s)' for the one-line fleet view."""
    det = finding.detection
    places = ["CPU {0}".format(c) if c >= 0 else "all CPUs" for c in det.cpus[:3]] + det.interfaces[:2]
    rates = [c.now for c in det.criteria if c.now is not None]
    return "{0}{1}{2}".format(finding.cause.title, " on " + ", ".join(places) if places else "",
                              " ({0})".format(fmt_rate(max(rates))) if rates else "")


def status_rank(report):
    """Worst first: problems (largest loss first), then errors, then healthy nodes."""
    return ({PROBLEMS: 0, ERROR: 1, HEALTHY: 2}[report.status], -report.worst_rate, report.node or "")
