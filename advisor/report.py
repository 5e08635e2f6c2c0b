"""One node's result: evidence, findings, the causes that could not be assessed, recommendations
and the success criteria, with the status and exit code they imply."""

from dataclasses import dataclass, field
from typing import List, Optional

from .diagnose.diagnosis import PROBLEM, TARGET_DROPS_PER_S, Criterion, diagnose
from .diagnose.evidence import Evidence
from .diagnose.recommend import recommend

HEALTHY, PROBLEMS, ERROR = "healthy", "problems", "error"
EXIT_CODES = {HEALTHY: 0, PROBLEMS: 1, ERROR: 2}


@dataclass
class Report:
    evidence: Optional[Evidence]
    findings: list = field(default_factory=list)
    not_assessed: list = field(default_factory=list)   # diagnosis.NotAssessed: never findings
    recommendations: list = field(default_factory=list)
    criteria: List[Criterion] = field(default_factory=list)
    node: Optional[str] = None
    error: Optional[str] = None          # the one sentence, when the advisor could not do its job
    fallback_reason: Optional[str] = None  # why Netdata was not used, in automatic mode

    @property
    def problems(self):
        return [f for f in self.findings if f.cause.severity == PROBLEM]

    @property
    def notes(self):
        return [f for f in self.findings if f.cause.severity != PROBLEM]

    @property
    def status(self):
        if self.error is not None:
            return ERROR
        return PROBLEMS if self.problems else HEALTHY

    @property
    def exit_code(self):
        return EXIT_CODES[self.status]

    @property
    def worst_rate(self):
        """The largest per-second loss among the criteria: orders nodes worst first."""
        rates = [c.now for c in self.criteria if c.now is not None]
        return max(rates) if rates else 0.0

    @property
    def run_on_host(self):
        """Host-only changes that cannot be made from where the advisor ran."""
        ev = self.evidence
        if ev is None or not any(r.host_only for r in self.recommendations):
            return False
        return not ev.host.local or ev.host.in_container


def base_criteria(ev):
    """Rows shown on every report, so a healthy node shows its numbers too."""
    rows = [Criterion("backlog drops, all CPUs", ev.rate(ev.total("dropped")), TARGET_DROPS_PER_S)]
    udp = ev.sockets.get("udp_rcvbuf_errors")
    if udp is not None:
        rows.append(Criterion("UDP receive-buffer errors", ev.rate(udp), TARGET_DROPS_PER_S))
    iface_in = [i.inbound_drops for i in ev.interfaces if i.inbound_drops is not None and i.role != "bond-slave"]
    if iface_in:
        rows.append(Criterion("inbound drops, all charted interfaces", ev.rate(sum(iface_in)), TARGET_DROPS_PER_S))
    return rows


def build_report(evidence, fallback_reason=None):
    diagnosis = diagnose(evidence)
    findings = diagnosis.findings
    recs = recommend(evidence, findings)
    criteria = base_criteria(evidence)
    seen = {c.metric for c in criteria}
    for finding in findings:
        for row in finding.detection.criteria:
            if row.metric not in seen:
                seen.add(row.metric)
                criteria.append(row)
    return Report(evidence=evidence, findings=findings, not_assessed=diagnosis.not_assessed,
                  recommendations=recs, criteria=criteria, node=evidence.node, fallback_reason=fallback_reason)


def error_report(sentence, node=None):
    return Report(evidence=None, node=node, error=sentence)
