"""The cause table holds every decision: each cause's thresholds are what its detector reads (and
no number a decision rests on is written inside a detector), its needs are Evidence fields,
a cause whose needed evidence is absent is listed as not assessed (never a finding), the
documented targets are the table's, remedies decide host_only, and the advisor's modules import
each other without a cycle."""

import ast
import dataclasses
import json
import os
import re

import pytest

import netdrops_advisor
import netdrops_collector
from netdrops_advisor.apply import plan as apply
from netdrops_advisor.diagnose import diagnosis, recommend
from netdrops_advisor import render
from netdrops_advisor.diagnose.evidence import (SOCKET_KEYS, TUNING_KEYS, CpuEvidence, Evidence, HostFacts,
                                                IfaceEvidence, ReasonSample)
from netdrops_collector.kernel import dropreasons
from netdrops_advisor.report import build_report

from test_advisor_support import evidence, local_host, nic, veth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADVISOR_DIR = os.path.dirname(os.path.abspath(netdrops_advisor.__file__))
COLLECTOR_DIR = os.path.dirname(os.path.abspath(netdrops_collector.__file__))


def cpus(*rows):
    """cpus((processed, dropped, squeezed, busy), ...) -> [CpuEvidence] numbered from 0."""
    return [CpuEvidence(cpu=i, processed=p, dropped=d, squeezed=s, busy_pct=b) for i, (p, d, s, b) in enumerate(rows)]


def cases():
    """Evidence that takes every detector past its first return (the diagnosis tests' cases)."""
    sender = veth("eth0", rps="0")
    sender.outbound_drops = 130.0
    remote_nic = nic("eth0", inbound=500.0, rx=100000.0)
    remote_nic.rx_queues = remote_nic.rps_masks = remote_nic.rps_flow_cnt = None
    remote = evidence(cpus=cpus((95000.0, 500.0, 0.0, 50.0), (2000.0, 0.0, 0.0, 5.0)), interfaces=[remote_nic],
                      host=HostFacts(local=False), source="netdata")
    remote.rps_interfaces = 0
    pair = evidence(window=10.0, cpus=cpus((50000.0, 300.0, 0.0, 95.0), (45000.0, 0.0, 0.0, 50.0),
                                           (100.0, 0.0, 0.0, 1.0), (100.0, 0.0, 0.0, 1.0)),
                    interfaces=[nic("eth0", inbound=300.0, rx=95000.0)], host=local_host(4))
    full = evidence(cpus=cpus((100.0, 0.0, 0.0, 5.0), (900.0, 300.0, 20.0, 99.0)),
                    interfaces=[veth("vethab12", inbound=298.0, rx=600.0, rps="2", container="ct101")])
    full.cpus[1].backlog_peak_pct = 80.0
    full.reasons = {"cpu_backlog": 300.0, "other": 0.0}
    return reason_cases() + [
        full,
        evidence(cpus=cpus((100.0, 0.0, 0.0, 5.0), (900.0, 130.0, 0.0, 5.0)), interfaces=[sender],
                 sockets={"udp_sndbuf_errors": 130.0}),
        evidence(cpus=cpus((5000.0, 0.0, 40.0, 5.0), (100.0, 0.0, 0.0, 5.0))),
        evidence(window=10.0, cpus=cpus((95000.0, 500.0, 0.0, 50.0), (2000.0, 0.0, 0.0, 5.0),
                                        (1500.0, 0.0, 0.0, 5.0), (1500.0, 0.0, 0.0, 5.0)),
                 interfaces=[nic("eth0", inbound=500.0, rx=100000.0)], host=local_host(4)),
        pair, remote,
        evidence(sockets={"udp_rcvbuf_errors": 200.0, "udp_in_errors": 200.0}),
        evidence(sockets={"udp_sndbuf_errors": 30.0}),
        evidence(sockets={"tcp_listen_overflows": 12.0, "tcp_listen_drops": 12.0}),
        evidence(interfaces=[nic("enp3s0", inbound=40.0, rx=9000.0, missed=40.0)]),
        evidence(interfaces=[nic(inbound=30.0, rx=900.0)]),
    ]


def with_reasons(ev, samples=(), **reasons):
    ev.reasons = dict({"other": 0.0}, **reasons)
    ev.reason_samples = list(samples)
    return ev


def reason_cases():
    """Evidence with the kernel's drop reasons: each reason's cause past its first return."""
    lldp = ReasonSample(reasons=["unhandled_proto"], seconds=3.0, records=9, limit=200, by_reason={"unhandled_proto": 9},
                        protocols={"unhandled_proto": {"0x88cc": 9}},
                        locations={"unhandled_proto": {"__netif_receive_skb_core": 9}})
    closed = ReasonSample(reasons=["no_socket", "netfilter_drop"], seconds=3.0, records=12, limit=200,
                          by_reason={"no_socket": 6, "netfilter_drop": 6},
                          locations={"no_socket": {"__udp4_lib_rcv": 6}, "netfilter_drop": {"nf_hook_slow": 6}},
                          ports={"udp/47901": 6})
    sender = veth("veth1", rps="0")
    sender.outbound_drops = 20.0
    return [
        with_reasons(evidence(interfaces=[nic(inbound=30.0, rx=900.0)]), [lldp], unhandled_proto=30.0),
        with_reasons(evidence(), [closed], no_socket=60.0, netfilter_drop=60.0),
        with_reasons(evidence(interfaces=[sender]), qdisc_drop=20.0, full_ring=20.0, nomem=5.0, proto_mem=5.0),
        with_reasons(evidence(interfaces=[nic(inbound=30.0, rx=900.0)]), other=30.0),
        with_reasons(evidence(sockets={"udp_rcvbuf_errors": 200.0}), socket_rcvbuff=199.0),
        with_reasons(evidence(sockets={"tcp_listen_overflows": 0.0, "tcp_listen_drops": 0.0}), tcp_listen_overflow=20.0),
    ]


class Recording(dict):
    """The thresholds a detector is given, remembering which it read."""

    def __init__(self, values):
        super().__init__(values)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return super().__getitem__(name)


# -- thresholds --------------------------------------------------------------------------------

def test_each_cause_declares_thresholds_with_a_unit_and_a_why_and_names_are_unique():
    by_name = {}
    for cause in diagnosis.CAUSES:
        assert cause.thresholds, cause.id
        for t in cause.thresholds:
            assert isinstance(t, diagnosis.Threshold) and t.unit and t.why, t
            # one declaration per name: causes share the object, not a copy with another value
            assert by_name.setdefault(t.name, t) is t, t.name
        assert len(cause.limits) == len(cause.thresholds), cause.id


def test_every_threshold_of_a_cause_is_read_by_its_detector_and_nothing_else():
    read = {cause.id: set() for cause in diagnosis.CAUSES}
    found = set()
    for ev in cases():
        for cause in diagnosis.CAUSES:
            limits = Recording(cause.limits)
            if cause.detect(ev, limits) is not None:
                found.add(cause.id)
            read[cause.id] |= limits.read
    assert found == {c.id for c in diagnosis.CAUSES}   # every detector found something once
    for cause in diagnosis.CAUSES:
        assert read[cause.id] == set(cause.limits), cause.id


def test_a_changed_threshold_changes_the_decision():
    # the detector decides by the value it is given, not by a number of its own
    ev = evidence(interfaces=[nic(inbound=30.0, rx=900.0)])   # 3 drops/s nobody explains
    cause = [c for c in diagnosis.CAUSES if c.id == "unexplained_iface_drops"][0]
    assert cause.detect(ev, cause.limits) is not None
    assert cause.detect(ev, dict(cause.limits, target_drops_per_s=5.0)) is None
    cause = [c for c in diagnosis.CAUSES if c.id == "budget_exhaustion"][0]
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0, 5.0), (9000.0, 80.0, 30.0, 5.0)))
    assert [c.target for c in cause.detect(ev, dict(cause.limits, squeeze_target_per_s=7.0)).criteria] == [7.0]


def _numbers_in(function):
    """Numeric literals of a function, except slice bounds (how many lines are shown), 0 and 1
    (none, one, single queue) and 100 in a product (a share shown as a percentage)."""
    parents = {}
    for node in ast.walk(function):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    found = []
    for node in ast.walk(function):
        if not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
            continue
        up, inside_slice = node, False
        while up in parents:
            up = parents[up]
            inside_slice = inside_slice or isinstance(up, ast.Slice)
        if inside_slice or (node.value in (0, 1) and (type(node.value) is int or node.value == 0)):
            continue
        parent = parents.get(node)
        if node.value == 100 and isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Mult):
            continue
        found.append((node.lineno, node.value))
    return found


def test_no_decision_is_a_number_inside_a_detector():
    path = diagnosis.__file__
    with open(path) as f:
        tree = ast.parse(f.read())
    detectors = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and (n.name.startswith("detect_") or n.name.startswith("_"))]
    assert len([n for n in detectors if n.name.startswith("detect_")]) == len(diagnosis.CAUSES)
    for function in detectors:
        assert _numbers_in(function) == [], "{0}: numbers written in a detector: {1}".format(
            function.name, _numbers_in(function))


def test_the_check_catches_a_number_in_a_detector():
    tree = ast.parse("def detect_x(ev, th):\n    return ev.rate(3) > 0.9 * th['a'] and ev.cpus[:4]\n")
    assert [v for _l, v in _numbers_in(tree.body[0])] == [3, 0.9]


def test_documented_targets_and_thresholds_come_from_the_table():
    assert diagnosis.TARGET_DROPS_PER_S == diagnosis.TARGET.value
    with open(os.path.join(ADVISOR_DIR, "SCHEMA.md")) as f:
        schema = f.read()
    seen = {}
    for cause in diagnosis.CAUSES:
        for t in cause.thresholds:
            seen.setdefault(t, []).append(cause.id)
    for t, used_by in seen.items():
        row = "| `{0}` | {1:g}{2}{3} | {4} | {5} |".format(
            t.name, t.value, "" if t.unit[:1] in "/%" else " ", t.unit, ", ".join("`{0}`".format(c) for c in used_by), t.why)
        assert row in schema, row
    assert len(re.findall(r"^\| `[a-z_]+` \| [0-9.]+", schema, re.M)) == len(seen)   # no stale row
    assert "`target` is {0:g} (per second) for drops and errors, {1:g} for time_squeeze".format(
        diagnosis.TARGET.value, diagnosis.SQUEEZE_TARGET.value) in schema
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert "target < {0:g} drops/s".format(diagnosis.TARGET.value) in readme
    assert "target (< {0:g}/s)".format(diagnosis.TARGET.value) in readme
    # and what the reports show
    report = build_report(cases()[len(reason_cases())])   # the full backlog
    assert {c.target for c in report.criteria} == {diagnosis.TARGET.value, diagnosis.SQUEEZE_TARGET.value}
    assert "< {0:g}/s".format(diagnosis.TARGET.value) in render.render_text(report)


# -- needs -------------------------------------------------------------------------------------

def _fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


def _exists(name):
    where, _dot, attr = name.rpartition(".")
    reasons = {dropreasons.dimension_name(n) for n in dropreasons.COUNTED_NAMES} | {dropreasons.OTHER}
    return attr in {"cpus": _fields(CpuEvidence), "interfaces": _fields(IfaceEvidence), "sockets": set(SOCKET_KEYS),
                    "tuning": set(TUNING_KEYS), "host": _fields(HostFacts), "": _fields(Evidence),
                    "reasons": reasons}.get(where, ())


def test_needs_and_reads_name_evidence_fields():
    for cause in diagnosis.CAUSES:
        assert cause.needs, cause.id
        for name in cause.needs + cause.reads:
            for alternative in name.split("|"):
                assert _exists(alternative), "{0}: {1} is not an Evidence field".format(cause.id, alternative)
        for name in cause.needs:
            assert name in diagnosis.FIELD_LABELS, name   # the not-assessed sentence names it
    for name in diagnosis.FIELD_LABELS:
        assert all(_exists(a) for a in name.split("|")), name
    assert not _exists("cpus.nonsense") and not _exists("sockets.tcp_listen_drop")


# what a detector may read besides its evidence: names and where things are (shown, not decided on)
SHOWN_ONLY = {"cpus.cpu", "interfaces.name", "interfaces.container", "interfaces.peer"}
# properties, as the fields they are made of
DERIVED = {"interfaces.rps_on": ("interfaces.rps_masks",), "host.usable_cpus": ("host.online_cpus", "host.isolated_cpus")}


class Watched:
    """An Evidence (or one of its CPUs, interfaces, its host) that records the fields read."""

    def __init__(self, obj, prefix, seen):
        self._obj, self._prefix, self._seen = obj, prefix, seen

    def _note(self, name):
        full = "{0}.{1}".format(self._prefix, name) if self._prefix else name
        self._seen.update(DERIVED.get(full, (full,)))

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        if self._prefix:
            self._note(name)
            return value
        if name in ("cpus", "interfaces"):
            return [Watched(item, name, self._seen) for item in value]
        if name == "host":
            return Watched(value, "host", self._seen)
        if name in ("sockets", "tuning"):
            return WatchedDict(value, name, self._seen)
        if name == "reasons":   # whether reasons are counted is no reading of one
            return None if value is None else WatchedDict(value, name, self._seen)
        if name == "total":
            return lambda attr: self._seen.add("cpus." + attr) or value(attr)
        if name in ("rate", "window_seconds", "source", "iface", "cpu"):
            return value   # arithmetic and the window, not evidence
        self._note(name)
        return value


class WatchedDict(dict):
    def __init__(self, values, prefix, seen):
        super().__init__(values)
        self._prefix, self._seen = prefix, seen

    def get(self, key, default=None):
        self._seen.add("{0}.{1}".format(self._prefix, key))
        return super().get(key, default)

    def __getitem__(self, key):
        self._seen.add("{0}.{1}".format(self._prefix, key))
        return super().__getitem__(key)


def test_a_detector_reads_exactly_the_evidence_its_cause_declares():
    for cause in diagnosis.CAUSES:
        seen = set()
        for ev in cases():
            cause.detect(Watched(ev, "", seen), cause.limits)
        declared = {a for name in cause.needs + cause.reads for a in name.split("|")}
        assert seen - SHOWN_ONLY == declared, "{0}: read but not declared {1}, declared but not read {2}".format(
            cause.id, sorted(seen - SHOWN_ONLY - declared), sorted(declared - seen))


def test_has_value_sees_none_everywhere_as_absent():
    ev = evidence()
    assert diagnosis.has_value(ev, "cpus.dropped") and diagnosis.has_value(ev, "sockets.udp_rcvbuf_errors")
    assert not diagnosis.has_value(ev, "cpus.busy_pct") and not diagnosis.has_value(ev, "interfaces.missed")
    ev.cpus[1].busy_pct = 3.0
    ev.interfaces = [nic(), IfaceEvidence(name="x")]
    assert diagnosis.has_value(ev, "cpus.busy_pct") and diagnosis.has_value(ev, "interfaces.missed")
    ev.interfaces = [IfaceEvidence(name="x", fifo=0.0)]
    assert not diagnosis.has_value(ev, "interfaces.missed")
    assert diagnosis.has_value(ev, "interfaces.missed|interfaces.fifo")
    ev.sockets["udp_rcvbuf_errors"] = None
    assert not diagnosis.has_value(ev, "sockets.udp_rcvbuf_errors")


def stock_like(**kw):
    """Netdata's stock charts without ipv4.udperrors and ip.tcp_accept_queue, without the tuning chart."""
    ev = evidence(**kw)
    ev.sockets = dict.fromkeys(SOCKET_KEYS)
    ev.tuning = dict.fromkeys(TUNING_KEYS)
    for c in ev.cpus:
        c.busy_pct = 5.0
    return ev


def test_a_cause_without_its_evidence_is_not_assessed_never_a_finding():
    ev = stock_like(cpus=cpus((100.0, 0.0, 0.0, None), (900.0, 300.0, 0.0, None)), interfaces=[veth(inbound=300.0, rps="2")])
    report = build_report(ev)
    assert [f.id for f in report.findings] == ["backlog_overflow"]
    assert report.status == "problems" and report.exit_code == 1
    assert [n.id for n in report.not_assessed] == [
        "socket_rcvbuf_overflow", "socket_sndbuf_overflow", "listen_queue_overflow", "nic_loss", "unhandled_protocol",
        "qdisc_drop", "ring_full", "memory_pressure", "netfilter_drop", "no_socket"]
    text = render.render_text(report)
    assert ("Not assessed: socket receive buffer overflow (needs UDP RcvbufErrors or the drop reason "
            "SOCKET_RCVBUFF, which this source does not give).") in " ".join(text.split())
    assert "Not assessed: TCP accept queue overflow (needs TcpExt ListenOverflows or ListenDrops" in " ".join(text.split())
    # the causes only drop reasons tell apart: one line for all of them
    assert ("Not assessed (needs the kernel's drop reasons, which this source does not count): frames of a protocol "
            "nothing on this host handles, egress queueing discipline full") in " ".join(text.split())
    doc = json.loads(render.to_json(render.report_to_dict(report)))
    assert tuple(doc) == render.REPORT_KEYS
    nic_row = [n for n in doc["not_assessed"] if n["id"] == "nic_loss"][0]
    assert tuple(nic_row) == render.NOT_ASSESSED_KEYS
    assert nic_row["needs"] == ["interfaces.missed|interfaces.fifo"] and nic_row["title"] == "NIC-level loss (ring full)"
    assert [f["id"] for f in doc["findings"]] == ["backlog_overflow"]


def test_missing_tuning_is_not_a_reason_to_skip_a_cause_and_a_full_source_assesses_everything():
    # without the tuning chart the advisor steps from the kernel defaults (as before)
    ev = stock_like(cpus=cpus((100.0, 0.0, 0.0, None), (900.0, 300.0, 0.0, None)))
    ev.sockets.update(dict.fromkeys(SOCKET_KEYS, 0.0))
    ev.interfaces = [nic(missed=0.0)]
    ev.reasons = {"cpu_backlog": 300.0, "other": 0.0}
    report = build_report(ev)
    assert report.not_assessed == [] and [f.id for f in report.findings] == ["backlog_overflow"]
    assert render.report_to_dict(report)["not_assessed"] == []
    assert "Not assessed" not in render.render_text(report)


def test_the_schema_documents_the_not_assessed_keys():
    with open(os.path.join(ADVISOR_DIR, "SCHEMA.md")) as f:
        doc = f.read()
    assert "### `not_assessed[]`" in doc
    for key in render.NOT_ASSESSED_KEYS:
        assert '"{0}"'.format(key) in doc


# -- remedies ----------------------------------------------------------------------------------

def test_recommendations_take_host_only_from_their_remedy(monkeypatch):
    ev = evidence(window=10.0, cpus=cpus((95000.0, 500.0, 0.0, 50.0), (2000.0, 0.0, 0.0, 5.0),
                                         (1500.0, 0.0, 0.0, 5.0), (1500.0, 0.0, 0.0, 5.0)),
                  interfaces=[nic("eth0", inbound=500.0, rx=100000.0)], host=local_host(4))
    before = {r.id: r.host_only for r in build_report(ev).recommendations}
    assert before["net.core.netdev_max_backlog"] is True
    assert before["/sys/class/net/eth0/queues/rx-0/rps_cpus"] is False
    flipped = {k: dataclasses.replace(r, host_only=not r.host_only) for k, r in recommend.REMEDIES.items()}
    monkeypatch.setattr(recommend, "REMEDIES", flipped)
    after = {r.id: r.host_only for r in build_report(ev).recommendations}
    assert after == {k: not v for k, v in before.items()}


# -- the kill hook -----------------------------------------------------------------------------

def test_checkpoints_do_nothing_in_the_product_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("NETDROPS_TEST_KILL_AT", "after-snapshot")   # the old hook's variable
    for point in ("after-snapshot", "after-write-1", "after-file"):
        assert apply.checkpoint(point) is None   # still alive


# -- imports -----------------------------------------------------------------------------------

def _imports(package_dir, package):
    """{module: {modules of the same package it imports, at any depth of its code}}; modules are
    named relative to the package ('diagnose.diagnosis'), sub-packages by their folder."""
    paths = {}
    for d, _subdirs, names in os.walk(package_dir):
        for name in names:
            if name.endswith(".py") and "." not in name[:-3]:  # netdrops.chart.py is no module
                parts = os.path.relpath(os.path.join(d, name), package_dir)[:-3].split(os.sep)
                paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(d, name)
    graph = {}
    for module, path in sorted(paths.items()):
        with open(path) as f:
            tree = ast.parse(f.read())
        here = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
        here = [p for p in here if p]
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
                elif node.module and node.module.startswith(package + "."):
                    base = node.module.split(".")[1:]
                else:
                    continue
                for alias in node.names:  # `from . import x` imports module x when there is one
                    full = ".".join(base + [alias.name])
                    deps.add(full if full in paths else ".".join(base))
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(package + "."))
        graph[module] = {d for d in deps if d != module and d in paths}
    return graph


def _cycle(graph):
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path + [node, dep]
            if dep not in state:
                found = visit(dep, path + [node])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


@pytest.mark.parametrize("package_dir,package", [(ADVISOR_DIR, "netdrops_advisor"),
                                                 (COLLECTOR_DIR, "netdrops_collector")])
def test_no_import_cycle_even_through_imports_inside_functions(package_dir, package):
    assert _cycle(_imports(package_dir, package)) is None


def test_the_cycle_check_sees_a_cycle():
    assert _cycle({"cli": {"apply_cli"}, "apply_cli": {"cli"}}) in (["cli", "apply_cli", "cli"],
                                                                    ["apply_cli", "cli", "apply_cli"])
    assert _cycle({"a": {"b"}, "b": set()}) is None
