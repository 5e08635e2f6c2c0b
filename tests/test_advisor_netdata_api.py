"""The advisor against Netdata's answers in odd cases: recorded answers of a real Netdata 1.37.1
(tests/fixtures/netdata_api/, each file says where it came from), fed to the parsers directly
and served over a real loopback HTTP server to the client and the command line; plus the
failures no recording can hold (nothing listening, a server that never answers)."""

import json
import socket
import subprocess
import sys
import urllib.parse

import pytest

from test_advisor_support import Replay, recorded, recorded_json
from test_apply_support import Tree, advisor
from netdrops_advisor.sources import netdata_api, netdata_source
from netdrops_advisor.errors import (MissingEvidence, NetdataFormatError, NetdataHTTPError, NetdataTimeout,
                                     NetdataUnreachable, UnknownNode)
from netdrops_advisor.sources.netdata_api import NetdataClient, parse_version, parse_window
from netdrops_advisor.report import build_report

ADVISOR = [sys.executable, "-m", "netdrops_advisor.cli"]


def route(name, path=None, context=None):
    rec = recorded(name)
    return (path or urllib.parse.urlsplit(rec["request"]).path, context), (rec["status"], rec["content_type"], rec["body"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_advisor(*args, timeout=60):
    proc = subprocess.run(ADVISOR + list(args), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_sentence_exit_2(code, out, err, *words):
    assert code == 2, (out, err)
    assert "Traceback" not in err + out
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


# -- recorded answers through the parsers ------------------------------------------------------

def test_every_fixture_says_where_it_came_from():
    import glob
    import os
    from test_advisor_support import FIXTURES
    for path in glob.glob(os.path.join(FIXTURES, "*.json")):
        with open(path) as f:
            rec = json.load(f)
        assert "Netdata" in rec["recorded_from"] and "v1.37.1" in rec["recorded_from"], path
        assert rec["situation"] and rec["request"].startswith("/"), path


def test_a_window_keeps_charts_apart_and_counts_a_vanished_veth():
    window = parse_window(recorded_json("data_iface_drops_vanished_veth"), "netdrops.iface_drops", "sum")
    by_chart = window.by_chart()
    assert set(by_chart) == {"netdrops_local.iface_eth0_drops", "netdrops_local.iface_ndl8042h0_drops",
                             "netdrops_local.iface_ndl9298h0_drops"}
    # the deleted veth's drops still count: group=sum adds up the points it had
    assert by_chart["netdrops_local.iface_ndl8042h0_drops"]["inbound"] == pytest.approx(629, abs=1)
    assert by_chart["netdrops_local.iface_eth0_drops"]["inbound"] == 0
    assert window.seconds == window.before - window.first_entry + 1  # agent younger than the window


def test_an_aligned_query_before_history_is_all_nulls():
    window = parse_window(recorded_json("data_aligned_window_before_history"), "netdrops.iface_drops", "average")
    assert window.before < window.first_entry
    assert all(c.value is None for c in window.columns)


def test_netdatas_own_per_cpu_charts_are_enough_to_name_the_cpu():
    windows = {"cpu.softnet_stat": parse_window(recorded_json("data_cpu_softnet_stat_stock"), "cpu.softnet_stat", "sum")}
    info = netdata_api.parse_info(recorded_json("info_single"))
    ev = netdata_source.build_evidence("advx", "http://netdata:19999", info, "netdata-stock", windows, {}, [], [])
    assert [c.cpu for c in ev.cpus] == [0, 1]
    assert ev.cpu(1).dropped == pytest.approx(45, abs=1) and ev.cpu(0).dropped == 0
    assert ev.cpu_ids_are_rows
    report = build_report(ev)
    finding = report.findings[0]
    assert finding.id == "backlog_overflow" and finding.detection.cpus == [1]
    assert finding.detection.confidence == "medium"  # stock charts cannot tell flow-limit drops apart
    rec = report.recommendations[0]
    assert rec.setting == "net.core.netdev_max_backlog" and rec.current is None and rec.new == "5000"
    assert report.run_on_host  # another machine's evidence: its commands run there


def test_labels_alarms_contexts_and_parent_info():
    labels = netdata_api.parse_chart_labels(recorded_json("context_labels_iface_drops"))
    veth = labels["netdrops_local.iface_ndl9298h0_drops"]
    assert (veth["kind"], veth["device"]) == ("veth", "ndl9298h0")
    alarms = netdata_api.parse_alarms(recorded_json("alarms_backlog_warning"))
    assert "1min_netdev_backlog_exceeded" in [a.name for a in alarms]
    assert all(a.status in ("WARNING", "CRITICAL") for a in alarms)
    # only receive-path alarms are shown beside the diagnosis
    shown = [a.name for a in alarms if netdata_source.relevant_alarm(a)]
    assert shown == ["1min_netdev_backlog_exceeded"], [a.name for a in alarms]
    assert netdata_source.choose_mode(netdata_api.parse_contexts(recorded_json("contexts_netdrops"))) == "netdata"
    assert netdata_source.choose_mode(netdata_api.parse_contexts(recorded_json("contexts_stock_only"))) == "netdata-stock"
    info = netdata_api.parse_info(recorded_json("info_parent_with_child"))
    assert [h.hostname for h in info.mirrored_hosts] == ["parent", "child"]
    assert info.version == "v1.37.1"


def test_a_shape_the_parser_does_not_know_is_a_format_error():
    doc = recorded_json("data_cpu_softnet_stat_stock")
    doc["chart_ids"] = doc["chart_ids"][:-1]
    with pytest.raises(ValueError):
        parse_window(doc, "cpu.softnet_stat", "sum")
    doc = recorded_json("data_cpu_softnet_stat_stock")
    doc["result"]["data"][0].append(1.0)
    with pytest.raises(ValueError):
        parse_window(doc, "cpu.softnet_stat", "sum")


# -- the client over real sockets --------------------------------------------------------------

def test_nothing_listening_is_unreachable():
    client = NetdataClient("http://127.0.0.1:{0}".format(free_port()), timeout=2)
    with pytest.raises(NetdataUnreachable, match="connection refused"):
        client.info()


def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        client = NetdataClient("http://127.0.0.1:{0}".format(listener.getsockname()[1]), timeout=1)
        with pytest.raises(NetdataTimeout, match="within 1 s"):
            client.info()


def test_recorded_http_errors_become_sentences():
    routes = dict([route("unknown_node"), route("context_not_found")])
    with Replay(routes) as server:
        with pytest.raises(UnknownNode, match="nosuchnode"):
            NetdataClient(server.url, node="nosuchnode").info()
        with pytest.raises(NetdataHTTPError) as err:
            NetdataClient(server.url).window("netdrops.nosuch", 10, "sum")
        assert netdata_api.is_no_metrics(err.value)
        assert "No metrics where matched to query" in str(err.value)


def test_malformed_json_is_a_format_error():
    info = recorded("info_single")
    truncated = (200, info["content_type"], info["body"][: len(info["body"]) // 2])  # a cut-off answer
    with Replay({("/api/v1/info", None): truncated}) as server:
        with pytest.raises(NetdataFormatError, match="malformed JSON"):
            NetdataClient(server.url).info()


def test_a_node_without_data_in_the_window_is_missing_evidence():
    routes = dict([route("info_single"), route("contexts_netdrops"),
                   route("data_aligned_window_before_history", "/api/v1/data")])
    with Replay(routes) as server:
        client = NetdataClient(server.url)
        with pytest.raises(MissingEvidence, match="no netdrops.softnet_dropped data"):
            netdata_source.read_node(client, 60)


def test_one_request_per_context_whatever_the_number_of_charts():
    body = recorded("data_cpu_softnet_stat_stock")
    routes = dict([route("info_single"), route("contexts_stock_only")])
    routes[("/api/v1/data", None)] = (200, body["content_type"], body["body"])
    with Replay(routes) as server:
        client = NetdataClient(server.url)
        netdata_source.read_node(client, 30)
    data_requests = [p for p in server.seen if p.startswith("/api/v1/data")]
    contexts = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)["context"][0] for p in data_requests]
    assert len(contexts) == len(set(contexts))
    assert client.requests <= 12
    assert all("unaligned" in p for p in data_requests)


# -- the command line: one sentence, exit 2, never a traceback ---------------------------------

def test_cli_unreachable_url():
    url = "http://127.0.0.1:{0}".format(free_port())
    assert_one_sentence_exit_2(*run_advisor("--url", url), "No Netdata answers", url)


def test_cli_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = "http://127.0.0.1:{0}".format(listener.getsockname()[1])
        assert_one_sentence_exit_2(*run_advisor("--url", url, "--timeout", "1"), "did not answer", "1 s")


def test_cli_http_error_and_malformed_json():
    info = recorded("info_single")
    routes = {("/api/v1/info", None): (500, "text/plain", "Internal server error (synthetic, not recorded)")}
    with Replay(routes) as server:
        assert_one_sentence_exit_2(*run_advisor("--url", server.url), "HTTP 500")
    routes = {("/api/v1/info", None): (200, info["content_type"], info["body"][:300])}
    with Replay(routes) as server:
        assert_one_sentence_exit_2(*run_advisor("--url", server.url), "malformed JSON")


def test_cli_unknown_node_names_the_nodes_there_are():
    routes = dict([route("info_parent_with_child"), route("unknown_node_on_parent")])
    with Replay(routes) as server:
        assert_one_sentence_exit_2(*run_advisor("--url", server.url, "--node", "nosuch"),
                                   "no node named 'nosuch'", "parent, child")


def test_cli_missing_charts_and_json_error_report():
    routes = dict([route("info_single"), route("contexts_netdrops"), route("context_not_found", "/api/v1/data")])
    with Replay(routes) as server:
        code, out, err = run_advisor("--url", server.url, "--json")
    assert_one_sentence_exit_2(code, out, err, "no netdrops.softnet_dropped data")
    doc = json.loads(out)
    assert doc["status"] == "error" and doc["exit_code"] == 2 and doc["error"] in err
    assert doc["findings"] == [] and doc["recommendations"] == []


# -- old and new Netdata versions ------------------------------------------------------------

def info_with_version(version):
    """info_single as recorded, with another version: a synthetic answer, since 1.37.1 (Debian
    12's) is the only Netdata these tests can run."""
    rec = recorded("info_single")
    doc = json.loads(rec["body"])
    doc["version"] = version
    return ("/api/v1/info", None), (200, rec["content_type"], json.dumps(doc))


def test_version_texts_netdata_prints():
    assert parse_version("v1.37.1") == (1, 37)
    assert parse_version("v1.44.0-122-nightly") == (1, 44)
    assert parse_version("2.0.3") == (2, 0)
    assert parse_version("v1.9") == (1, 9)
    assert parse_version("custom-build") is None
    assert parse_version("v1." + "9" * 5000) is None  # not a version, and not a ValueError from int()


@pytest.mark.parametrize("version, words", [("v1.30.1", "older than v1.37"), ("v1.9.0", "older than v1.37"),
                                            ("v3.0.0", "newer than the Netdata versions")])
def test_cli_a_netdata_too_old_or_too_new_is_refused_by_name(version, words):
    routes = dict([info_with_version(version), route("contexts_netdrops")])
    with Replay(routes) as server:
        assert_one_sentence_exit_2(*run_advisor("--url", server.url), "Netdata " + version + " at", words,
                                   "--source kernel")
    assert server.seen == ["/api/v1/info"]  # nothing else asked of it


def test_a_netdata_2_is_read_and_an_answer_in_another_shape_names_its_version():
    """2.x still serves /api/v1: the recorded 1.37 answers under a 2.x version are diagnosed.
    Were its /api/v1/data answer to lose chart_ids, the sentence says which Netdata sent what."""
    body = recorded("data_cpu_softnet_stat_stock")
    routes = dict([info_with_version("v2.1.0"), route("contexts_stock_only")])
    routes[("/api/v1/data", None)] = (200, body["content_type"], body["body"])
    with Replay(routes) as server:
        code, out, err = run_advisor("--url", server.url)
    assert code in (0, 1) and "Netdata v2.1.0" in out, (out, err)
    reshaped = json.loads(body["body"])
    del reshaped["chart_ids"]
    routes[("/api/v1/data", None)] = (200, body["content_type"], json.dumps(reshaped))
    with Replay(routes) as server:
        assert_one_sentence_exit_2(*run_advisor("--url", server.url), "Netdata v2.1.0 at", "/api/v1/data",
                                   "does not know", "chart_ids")


def api_faults():
    info = recorded("info_single")
    return {
        "HTTP 500": {("/api/v1/info", None): (500, "text/plain", "Internal server error (synthetic, not recorded)")},
        "malformed JSON": {("/api/v1/info", None): (200, info["content_type"], info["body"][:300])},
        "older than v1.37": dict([info_with_version("v1.30.1")]),
        "shape the advisor does not know": dict([route("info_single"), route("contexts_stock_only"), (
            ("/api/v1/data", None), (200, "application/json", json.dumps({"api": 2, "result": []})))]),
    }


@pytest.mark.parametrize("fault", sorted(api_faults()))
def test_cli_apply_after_an_api_fault_changes_nothing(fault, tmp_path):
    tree = Tree(tmp_path / "root")
    before = tree.digest()
    with Replay(api_faults()[fault]) as server:
        code, out, err = advisor("--apply", "--yes", "--root", tree.root, "--source", "netdata", "--url", server.url)
    assert_one_sentence_exit_2(code, out, err, fault)
    assert tree.digest() == before  # no snapshot, no setting, no file written


def test_cli_usage_errors_exit_2():
    code, out, err = run_advisor("--source", "kernel", "--url", "http://127.0.0.1:1")
    assert code == 2 and "cannot be combined" in err and "Traceback" not in err
    code, out, err = run_advisor("--window", "-3")
    assert code == 2 and "Traceback" not in err
    code, out, err = run_advisor("--help")
    assert code == 0
    for option in ("--json", "--url", "--node", "--all-nodes", "--window", "--source", "--timeout"):
        assert option in out


def _stock_node_evidence(drop_contexts=()):
    """Evidence from the recorded stock-only 1.37.1 answers (which have system.ip and no
    ip.tcp_accept_queue: nothing overflowed there), with some contexts taken out."""
    contexts = recorded("contexts_stock_only")
    doc = json.loads(contexts["body"])
    for context in drop_contexts:
        doc["contexts"].pop(context, None)
    body = recorded("data_cpu_softnet_stat_stock")
    routes = dict([route("info_single")])
    routes[("/api/v1/contexts", None)] = (200, contexts["content_type"], json.dumps(doc))
    routes[("/api/v1/data", None)] = (200, body["content_type"], body["body"])
    with Replay(routes) as server:
        client = NetdataClient(server.url)
        info, mode, windows, labels, alarms, notes = netdata_source.read_node(client, 30)
    return netdata_source.build_evidence("stock", server.url, info, mode, windows, labels, alarms, notes)


def test_a_stock_chart_netdata_makes_only_once_it_counts_is_zero_while_its_file_is_read():
    # ip.tcp_accept_queue is absent (never counted) while system.ip shows /proc/net/netstat is read
    ev = _stock_node_evidence()
    assert ev.sockets["tcp_listen_overflows"] == 0.0 and ev.sockets["tcp_listen_drops"] == 0.0
    report = build_report(ev)
    assert not any(n.cause.id == "listen_queue_overflow" for n in report.not_assessed)


def test_a_stock_chart_is_unknown_when_nothing_shows_its_file_is_read():
    ev = _stock_node_evidence(drop_contexts=("system.ip", "ipv4.udperrors", "ipv4.packets",
                                             "ipv6.udperrors", "ipv6.packets"))
    assert ev.sockets["tcp_listen_overflows"] is None and ev.sockets["udp_rcvbuf_errors"] is None
    report = build_report(ev)
    assert {"listen_queue_overflow", "socket_rcvbuf_overflow"} <= {n.cause.id for n in report.not_assessed}
