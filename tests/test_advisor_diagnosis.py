"""The advisor's cause table and recommendations, case by case: each case is the numbers a
source would give (Evidence), and the assertions are what a person would be told."""

import json

import pytest

from test_advisor_support import evidence, local_host, nic, veth
from netdrops_advisor.diagnose import diagnosis, recommend
from netdrops_advisor import render
from netdrops_advisor.diagnose.evidence import CpuEvidence, HostFacts
from netdrops_advisor.report import build_report


def cpus(*rows):
    """cpus((processed, dropped, squeezed[, busy]), ...) -> [CpuEvidence] numbered from 0."""
    out = []
    for i, row in enumerate(rows):
        processed, dropped, squeezed = row[:3]
        busy = row[3] if len(row) > 3 else None
        out.append(CpuEvidence(cpu=i, processed=processed, dropped=dropped, squeezed=squeezed, busy_pct=busy))
    return out


def ids(report):
    return [f.id for f in report.findings]


def recs(report):
    return {r.setting: r for r in report.recommendations}


# -- the table itself --------------------------------------------------------------------------

def test_cause_table_is_complete():
    seen = set()
    for cause in diagnosis.CAUSES:
        assert cause.id not in seen
        seen.add(cause.id)
        assert cause.severity in (diagnosis.PROBLEM, diagnosis.NOTE)
        assert cause.reason and cause.needs and cause.title
        for remedy in cause.remedies:
            assert remedy in recommend.REMEDIES, "{0} names unknown remedy {1}".format(cause.id, remedy)
        # a problem with nothing to change must say what would help instead
        if cause.severity == diagnosis.PROBLEM and not cause.remedies:
            assert cause.beyond_tuning
    assert set(recommend.LADDERS) <= set(recommend.REMEDIES)


def test_ladders_only_go_up_in_bounded_steps():
    for key, ladder in recommend.LADDERS.items():
        assert list(ladder) == sorted(set(ladder)), key
        for current in (0, ladder[0] - 1, ladder[0], ladder[-1] - 1):
            new = recommend.next_rung(ladder, current)
            assert new > current
            assert new == min(r for r in ladder if r > current)
        assert recommend.next_rung(ladder, ladder[-1]) is None
        assert recommend.next_rung(ladder, ladder[-1] * 10) is None
    # the seed runbook's step
    assert recommend.next_rung(recommend.LADDERS["netdev_max_backlog"], 1000) == 5000


# -- nothing wrong -----------------------------------------------------------------------------

def test_quiet_machine_is_healthy_and_gets_no_recommendation():
    report = build_report(evidence(interfaces=[nic(rx=500.0), veth(rx=200.0)]))
    assert report.findings == []
    assert report.recommendations == []
    assert report.status == "healthy" and report.exit_code == 0
    assert all(c.met for c in report.criteria)
    text = render.render_text(report)
    assert "No receive-path problems" in text and "Recommended changes" not in text


def test_squeezes_without_drops_are_a_note_not_a_problem():
    report = build_report(evidence(cpus=cpus((5000.0, 0.0, 40.0), (100.0, 0.0, 0.0))))
    assert ids(report) == ["squeeze_without_drops"]
    assert report.status == "healthy" and report.recommendations == []


# -- backlog overflow --------------------------------------------------------------------------

def test_backlog_overflow_names_cpu_and_veth_and_raises_the_backlog_one_step():
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (900.0, 300.0, 0.0)),
                  interfaces=[nic(rx=50.0), veth("vethab12", inbound=298.0, rx=600.0, rps="2", container="ct101")])
    report = build_report(ev)
    assert ids(report) == ["backlog_overflow"]
    finding = report.findings[0]
    assert finding.detection.cpus == [1]
    assert finding.detection.interfaces == ["vethab12"]
    assert finding.detection.confidence == "high"
    assert "ct101" in finding.detection.summary
    rec = recs(report)["net.core.netdev_max_backlog"]
    assert (rec.current, rec.new) == ("1000", "5000")
    assert rec.host_only and rec.raise_only and rec.kind == "sysctl"
    assert rec.command == "sysctl -w net.core.netdev_max_backlog=5000"
    assert rec.sysctl_conf_line == "net.core.netdev_max_backlog = 5000"
    assert "net.core.rmem_max" not in recs(report)
    assert report.exit_code == 1


def test_backlog_below_the_kernel_default_goes_back_to_it_first():
    ev = evidence(cpus=cpus((10.0, 0.0, 0.0), (60.0, 50.0, 0.0)), interfaces=[veth(inbound=50.0)],
                  tuning={"netdev_max_backlog": 2})
    rec = recs(build_report(ev))["net.core.netdev_max_backlog"]
    assert (rec.current, rec.new) == ("2", "1000")
    assert "below the kernel default" in rec.reason


def test_backlog_already_at_the_top_rung_is_never_raised_or_lowered():
    ev = evidence(cpus=cpus((10.0, 0.0, 0.0), (60.0, 50.0, 0.0)), tuning={"netdev_max_backlog": 250000})
    report = build_report(ev)
    assert ids(report) == ["backlog_overflow"]
    assert report.recommendations == []
    assert "No setting here would help" in render.render_text(report)
    assert report.findings[0].cause.beyond_tuning


def test_budget_raised_only_with_squeezes_on_dropping_cpus():
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (9000.0, 80.0, 30.0)), interfaces=[veth(inbound=80.0, rps="2")])
    report = build_report(ev)
    assert ids(report) == ["backlog_overflow", "budget_exhaustion"]
    r = recs(report)
    assert (r["net.core.netdev_budget"].current, r["net.core.netdev_budget"].new) == ("300", "600")
    assert int(r["net.core.netdev_budget_usecs"].new) > 8000
    # with drops but no squeezes the budget stays as it is
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (9000.0, 80.0, 0.0)), interfaces=[veth(inbound=80.0, rps="2")])
    assert "net.core.netdev_budget" not in recs(build_report(ev))


def test_budget_usecs_never_below_two_jiffies():
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (9000.0, 80.0, 30.0)), tuning={"netdev_budget_usecs": 1000},
                  host=local_host(hz=100))
    rec = recs(build_report(ev))["net.core.netdev_budget_usecs"]
    assert int(rec.new) >= 2 * 1000000 // 100


# -- sockets -----------------------------------------------------------------------------------

def test_socket_buffer_drops_get_socket_buffers_not_a_backlog_change():
    ev = evidence(sockets={"udp_rcvbuf_errors": 200.0, "udp_in_errors": 200.0})
    report = build_report(ev)
    assert ids(report) == ["socket_rcvbuf_overflow"]
    r = recs(report)
    assert set(r) == {"net.core.rmem_max", "net.core.rmem_default"}
    assert int(r["net.core.rmem_max"].new) > 212992 and int(r["net.core.rmem_default"].new) <= int(r["net.core.rmem_max"].new)
    assert "not a backlog problem" in report.findings[0].cause.reason


def test_send_errors_of_packets_the_backlog_dropped_are_not_a_send_buffer_problem():
    # a UDP sender into a veth gets ENOBUFS (Udp SndbufErrors) when the peer's backlog is full
    sender_side = veth("eth0", rps="0")
    sender_side.outbound_drops = 130.0
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (900.0, 130.0, 0.0)), interfaces=[sender_side],
                  sockets={"udp_sndbuf_errors": 130.0})
    report = build_report(ev)
    assert ids(report) == ["backlog_overflow"]
    assert not any(s.startswith("net.core.wmem") for s in recs(report))
    assert report.findings[0].detection.confidence == "high"
    assert "sent through veth eth0" in report.findings[0].detection.summary


def test_send_buffer_drops_get_wmem():
    report = build_report(evidence(sockets={"udp_sndbuf_errors": 30.0}))
    assert ids(report) == ["socket_sndbuf_overflow"]
    assert set(recs(report)) == {"net.core.wmem_max", "net.core.wmem_default"}


def test_accept_queue_overflow_says_what_would_help():
    report = build_report(evidence(sockets={"tcp_listen_overflows": 12.0, "tcp_listen_drops": 12.0}))
    assert ids(report) == ["listen_queue_overflow"]
    assert report.recommendations == [] and report.status == "problems"
    assert "somaxconn" in render.render_text(report)


# -- where the drops are -----------------------------------------------------------------------

def test_nic_loss_points_at_the_ring_not_a_sysctl():
    report = build_report(evidence(interfaces=[nic("enp3s0", inbound=40.0, rx=9000.0, missed=40.0)]))
    assert ids(report) == ["nic_loss"]
    assert report.recommendations == []
    text = render.render_text(report)
    assert "ethtool -G" in text and "enp3s0" in text


def test_nic_drops_without_backlog_drops_are_a_note():
    report = build_report(evidence(interfaces=[nic(inbound=30.0, rx=900.0)]))
    assert ids(report) == ["unexplained_iface_drops"]
    assert report.status == "healthy"


def test_bond_slave_drops_are_ignored():
    slave = nic("eth1", inbound=300.0)
    slave.role = "bond-slave"
    assert build_report(evidence(interfaces=[slave])).findings == []


# -- spreading the work ------------------------------------------------------------------------

def test_receive_work_on_one_cpu_gets_rps_and_rfs_for_the_single_queue_nic():
    ev = evidence(window=10.0, cpus=cpus((95000.0, 500.0, 0.0), (2000.0, 0.0, 0.0), (1500.0, 0.0, 0.0), (1500.0, 0.0, 0.0)),
                  interfaces=[nic("eth0", inbound=500.0, rx=100000.0)], host=local_host(4))
    report = build_report(ev)
    assert "rx_on_one_cpu" in ids(report)
    r = recs(report)
    rps = r["rps_cpus of eth0 rx-0"]
    assert (rps.current, rps.new, rps.value_type) == ("0", "f", "cpumask")
    assert rps.path == "/sys/class/net/eth0/queues/rx-0/rps_cpus"
    assert r["net.core.rps_sock_flow_entries"].new == "32768"
    assert r["rps_flow_cnt of eth0 rx-0"].new == "32768"
    assert rps.command == "echo f > /sys/class/net/eth0/queues/rx-0/rps_cpus"


def test_rps_masks_leave_isolated_cpus_out_and_use_32_bit_groups():
    many = [CpuEvidence(cpu=i, processed=0.0, dropped=0.0, squeezed=0.0) for i in range(40)]
    many[5] = CpuEvidence(cpu=5, processed=50000.0, dropped=100.0, squeezed=0.0)
    ev = evidence(cpus=many, interfaces=[veth("veth9", inbound=100.0, rx=50000.0, rps="00000000,00000000")],
                  host=local_host(40, isolated=range(4)))
    r = recs(build_report(ev))
    assert r["rps_cpus of veth9 rx-0"].new == "000000ff,fffffff0"
    assert r["net.core.rps_default_mask"].new == "000000ff,fffffff0"
    assert "isolated CPUs 0,1,2,3 left out" in r["rps_cpus of veth9 rx-0"].expected_effect


def test_rps_is_not_suggested_where_it_is_already_on():
    ev = evidence(window=10.0, cpus=cpus((95000.0, 500.0, 0.0), (2000.0, 0.0, 0.0)),
                  interfaces=[veth("veth1", inbound=500.0, rx=90000.0, rps="2")])
    assert "rx_on_one_cpu" not in ids(build_report(ev))


def test_saturated_cpu_is_named_as_beyond_tuning():
    ev = evidence(cpus=cpus((50000.0, 300.0, 20.0, 99.0), (100.0, 0.0, 0.0, 5.0)), interfaces=[veth(inbound=300.0, rps="2")])
    report = build_report(ev)
    assert "cpu_saturated" in ids(report)
    assert "more cores" in render.render_text(report)


# -- who can change what -----------------------------------------------------------------------

def test_inside_a_container_host_only_changes_are_for_the_host():
    ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (900.0, 300.0, 0.0)), tuning={"netdev_max_backlog": None},
                  host=local_host(init_netns=False))
    report = build_report(ev)
    rec = recs(report)["net.core.netdev_max_backlog"]
    assert rec.current is None and rec.new == "5000" and rec.host_only
    assert report.run_on_host
    text = render.render_text(report)
    assert "on the host" in text and "sysctl -w net.core.netdev_max_backlog=5000" in text
    assert render.report_to_dict(report)["run_on_host"] is True


# -- the JSON contract -------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["healthy", "problems"])
def test_json_report_has_exactly_the_documented_keys(case):
    if case == "healthy":
        ev = evidence()
    else:
        ev = evidence(cpus=cpus((100.0, 0.0, 0.0), (900.0, 300.0, 20.0)), interfaces=[veth(inbound=300.0)],
                      sockets={"udp_rcvbuf_errors": 5.0})
    doc = json.loads(render.to_json(render.report_to_dict(build_report(ev))))
    assert tuple(doc) == render.REPORT_KEYS
    assert doc["schema"] == "netdrops-advisor/1"
    assert tuple(doc["source"]) == render.SOURCE_KEYS
    for finding in doc["findings"]:
        assert tuple(finding) == render.FINDING_KEYS
    for rec in doc["recommendations"]:
        assert tuple(rec) == render.RECOMMENDATION_KEYS
        assert rec["id"] in [r for f in doc["findings"] for r in f["recommendations"]]
    for row in doc["success_criteria"]:
        assert tuple(row) == render.CRITERION_KEYS
    assert doc["exit_code"] == (0 if case == "healthy" else 1)
    if case == "problems":
        assert {f["id"] for f in doc["findings"]} >= {"backlog_overflow", "budget_exhaustion", "socket_rcvbuf_overflow"}


def test_schema_document_lists_every_key():
    import os
    import netdrops_advisor
    with open(os.path.join(os.path.dirname(netdrops_advisor.__file__), "SCHEMA.md")) as f:
        doc = f.read()
    for key in render.REPORT_KEYS + render.SOURCE_KEYS + render.FINDING_KEYS + render.RECOMMENDATION_KEYS \
            + render.CRITERION_KEYS + render.FLEET_KEYS:
        assert "`{0}`".format(key) in doc or '"{0}"'.format(key) in doc, key
    for cause in diagnosis.CAUSES:
        assert "`{0}`".format(cause.id) in doc


def test_remote_node_without_rps_anywhere_is_told_to_get_the_masks_on_the_node():
    eth0 = nic("eth0", inbound=500.0, rx=100000.0)
    eth0.rx_queues = eth0.rps_masks = eth0.rps_flow_cnt = None  # Netdata does not chart them
    ev = evidence(cpus=cpus((95000.0, 500.0, 0.0), (2000.0, 0.0, 0.0)), interfaces=[eth0],
                  host=HostFacts(local=False), source="netdata")
    ev.rps_interfaces = 0
    report = build_report(ev)
    assert "rx_on_one_cpu" in ids(report)
    assert not [r for r in report.recommendations if r.kind == "sysfs"]
    doc = render.report_to_dict(report)
    spread = [f for f in doc["findings"] if f["id"] == "rx_on_one_cpu"][0]
    assert spread["confidence"] == "low" and "run netdrops-advisor there" in spread["beyond_tuning"]
    # with one interface that has RPS on, the node may well spread already: nothing is claimed
    ev.rps_interfaces = 1
    assert "rx_on_one_cpu" not in ids(build_report(ev))
