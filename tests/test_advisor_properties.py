"""Property tests of the advisor's parsers (issue 7): Netdata API answers, the /proc and sysfs
text it reads, the values it writes, and the files it reads back (snapshot, sysctl drop-in, udev
rules). Any input gives the parser's records or its own documented error, never another
exception, and every record has the types the code after it relies on; well-formed input built
from random values gives back exactly those values."""

import ipaddress
import json
import math
import os
import string
import struct

import pytest
from hypothesis import example, given, settings, strategies as st

from netdrops_advisor.sources import hostfacts, netdata_api, procstat, udp_sockets
from netdrops_advisor.apply import persist, snapshot
from netdrops_advisor.apply import settings as values
from netdrops_advisor.errors import (NetdataError, NetdataFormatError, NetdataHTTPError, NetdataTimeout,
                                     NetdataUnreachable, NetdataVersionError, UnknownNode)
from netdrops_advisor.sources.netdata_api import Alarm, Column, ContextMeta, MirroredHost, NetdataClient, NodeInfo
from netdrops_collector.kernel.tuning import format_cpu_mask
from test_advisor_support import Replay, recorded_json

u32 = st.integers(min_value=0, max_value=2 ** 32 - 1)
u64 = st.integers(min_value=0, max_value=2 ** 64 - 1)
CASES = settings(max_examples=400, deadline=None)
DEEP = "[" * 5000   # json's C decoder raises RecursionError on it


# -- JSON documents ----------------------------------------------------------------------------

API_KEYS = ["version", "mirrored_hosts", "mirrored_hosts_status", "hostname", "guid", "reachable", "hops",
            "cores_total", "uid", "contexts", "first_time_t", "last_time_t", "collected", "chart_ids",
            "dimension_ids", "dimension_names", "latest_values", "result", "data", "update_every", "after",
            "before", "first_entry", "last_entry", "charts", "labels", "alarms", "status", "value", "name",
            "chart", "units", "info"]
NOTABLE = [10 ** 400, -(10 ** 400), float("inf"), float("-inf"), float("nan"), -0.0, "WARNING", "CRITICAL",
           "v1.37.1", "2", "1e999", ""]
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
                | st.sampled_from(NOTABLE))
json_docs = st.recursive(json_scalars,
                         lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.sampled_from(API_KEYS) | st.text(max_size=6), inner, max_size=5),
                         max_leaves=16)


def _paths(doc, prefix=()):
    """Every place in a document: a tuple of keys and list indexes."""
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


RETYPES = [
    lambda v: None, str, lambda v: [v], lambda v: {"value": v}, lambda v: True, lambda v: float("inf"),
    lambda v: 10 ** 400, lambda v: -v if _is_number(v) else v,
    lambda v: list(v) if isinstance(v, (str, dict)) else [],           # text or object -> list
    lambda v: "".join(map(str, v)) if isinstance(v, list) else "",     # list -> text of the same length
]


@st.composite
def near_valid(draw, valid):
    """A valid document with one place deleted, replaced by any JSON, or retyped."""
    doc = json.loads(json.dumps(draw(valid)))   # a deep copy (several times faster than copy.deepcopy)
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return doc
    known = [p for p in paths if p[-1] in API_KEYS or isinstance(p[-1], int) or p[-1] in ("schema", "runtime", "files")]
    path = draw(st.sampled_from(known if known and draw(st.booleans()) else paths))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    how = draw(st.sampled_from(["delete", "replace", "retype"]))
    if how == "delete":
        del parent[path[-1]]
    elif how == "replace":
        parent[path[-1]] = draw(json_docs)
    else:
        parent[path[-1]] = draw(st.sampled_from(RETYPES))(parent[path[-1]])
    return doc


def encoded(doc):
    return json.dumps(doc).encode("utf-8")


# -- well-formed Netdata answers built from random values ---------------------------------------

def words(first=string.ascii_lowercase, rest=string.ascii_lowercase + string.digits + "_", max_size=10):
    """Names built from alphabets (st.from_regex is many times slower to draw)."""
    return st.builds(str.__add__, st.sampled_from(first), st.text(rest, max_size=max_size))


names = words()
gap = st.sampled_from([None, math.nan])   # Netdata writes null; NaN is what Python's json also reads
reading = st.one_of(gap, st.integers(-2 ** 53, 2 ** 53), st.floats(allow_nan=False, allow_infinity=False))
times = st.integers(0, 2 ** 40)


def _expected(value):
    return None if value is None or value != value else abs(value)


@st.composite
def data_answers(draw):
    """(a one-point jsonwrap /api/v1/data answer, [Column] it must give, its times)."""
    charts = draw(st.lists(st.tuples(names.map("netdrops_local.{0}".format),
                                     st.lists(st.tuples(names, reading, reading), min_size=1, max_size=5,
                                              unique_by=lambda d: d[0])),
                           min_size=1, max_size=5, unique_by=lambda c: c[0]))
    has_point, has_latest = draw(st.booleans()), draw(st.booleans())
    after, before, first, last = (draw(times) for _ in range(4))
    every = draw(st.integers(1, 3600))
    chart_ids, dim_ids, dim_names, row, latest, columns = [], [], [], [], [], []
    for chart_id, dims in charts:
        for name, value, last_value in dims:
            dim_id = chart_id.partition(".")[2] + "_" + name
            chart_ids.append(chart_id), dim_ids.append(dim_id), dim_names.append(name)
            row.append(value), latest.append(last_value)
            columns.append(Column(chart_id, dim_id, name, _expected(value) if has_point else None,
                                  _expected(last_value) if has_latest else None))
    doc = {"api": 1, "update_every": every, "first_entry": first, "last_entry": last, "before": before,
           "after": after, "group": "sum", "options": "jsonwrap,unaligned,natural-points",
           "dimension_names": dim_names, "dimension_ids": dim_ids, "chart_ids": chart_ids,
           "result": {"labels": ["time"] + dim_names, "data": [[before] + row] if has_point else []},
           "dimensions": len(dim_ids), "points": 1, "format": "json"}
    if has_latest:
        doc["latest_values"] = latest
    return doc, columns, (after, before, first, last, every)


hostnames = words(rest=string.ascii_lowercase + string.digits + "-", max_size=12)
version_numbers = st.tuples(st.integers(0, 99), st.integers(0, 999), st.integers(0, 999))
guids = st.uuids().map(str)


@st.composite
def info_answers(draw):
    """(an /api/v1/info answer, the NodeInfo it must give)."""
    version = draw(st.sampled_from(["v", ""])) + "{0}.{1}.{2}".format(*draw(version_numbers)) + draw(
        st.sampled_from(["", "-122-nightly"]))
    hosts = draw(st.lists(st.tuples(hostnames, guids, st.booleans(), st.integers(0, 9)), max_size=5,
                          unique_by=lambda h: h[0]))
    cores = draw(st.none() | st.integers(1, 4096))
    uid, kernel = draw(guids), "{0}.{1}.{2}-".format(*draw(version_numbers)) + draw(hostnames)
    doc = {"version": version, "uid": uid, "mirrored_hosts": [h[0] for h in hosts],
           "mirrored_hosts_status": [{"guid": g, "hostname": n, "reachable": r, "hops": hops, "claim_id": None,
                                      "node_id": None} for n, g, r, hops in draw(st.permutations(hosts))],
           "alarms": {"normal": 3, "warning": 0, "critical": 0}, "kernel_version": kernel, "container": "none"}
    if cores is not None:
        doc["cores_total"] = str(cores) if draw(st.booleans()) else cores   # 1.37 writes it as text
    expected = NodeInfo(hosts[0][0] if hosts else None, version, uid,
                        [MirroredHost(n, g, r, hops) for n, g, r, hops in hosts], cores, kernel, "none")
    return doc, expected


ALARM_STATUSES = ["WARNING", "CRITICAL", "CLEAR", "UNDEFINED", "UNINITIALIZED", "REMOVED"]
alarm_values = st.none() | st.integers(-2 ** 53, 2 ** 53) | st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def alarms_answers(draw):
    """(an /api/v1/alarms answer, the [Alarm] it must give: WARNING and CRITICAL, CRITICAL first)."""
    raised = draw(st.lists(st.tuples(names, names.map("system.{0}".format), st.sampled_from(ALARM_STATUSES),
                                     alarm_values, st.text(max_size=10), st.text(max_size=30)),
                           max_size=8, unique_by=lambda a: a[0]))
    doc = {"hostname": "h", "status": True, "now": 1795700861, "alarms": {
        chart + "." + name: {"id": i, "name": name, "chart": chart, "status": status, "value": value,
                             "units": units, "info": info, "active": True}
        for i, (name, chart, status, value, units, info) in enumerate(raised)}}
    expected = sorted((Alarm(*a) for a in raised if a[2] in ("WARNING", "CRITICAL")),
                      key=lambda a: (a.status != "CRITICAL", a.name))
    return doc, expected


@st.composite
def contexts_answers(draw):
    contexts = draw(st.dictionaries(names.map("netdrops.{0}".format), st.tuples(times, times, st.booleans()),
                                    max_size=8))
    doc = {"hostname": "h", "contexts": {c: {"title": "t", "first_time_t": f, "last_time_t": la, "collected": col}
                                         for c, (f, la, col) in contexts.items()}}
    return doc, {c: ContextMeta(f, la, col) for c, (f, la, col) in contexts.items()}


@st.composite
def labels_answers(draw):
    charts = draw(st.dictionaries(names.map("netdrops_local.{0}".format),
                                  st.dictionaries(names, st.text(max_size=12), max_size=5), max_size=5))
    doc = {"title": "t", "charts": {c: {"name": c, "labels": labels} for c, labels in charts.items()}}
    return doc, charts


# -- what the code after each parser relies on --------------------------------------------------

def check_info(info, doc):
    assert isinstance(info, NodeInfo) and isinstance(info.version, str) and info.version == doc["version"]
    assert [h.hostname for h in info.mirrored_hosts] == (doc.get("mirrored_hosts") or [])
    assert info.cores_total is None or type(info.cores_total) is int
    for host in info.mirrored_hosts:   # --all-nodes asks each by name
        assert isinstance(host.hostname, str) and type(host.hops) is int and type(host.reachable) is bool
    assert info.hostname == (info.mirrored_hosts[0].hostname if info.mirrored_hosts else None)


def check_contexts(contexts, doc):
    assert all(isinstance(c, str) and isinstance(m, ContextMeta) and type(m.collected) is bool
               for c, m in contexts.items())
    assert set(contexts) <= set(doc["contexts"])


def check_rate(value):
    assert value is None or (type(value) is float and math.isfinite(value) and value >= 0)


def check_window(window, doc):
    for key, field in (("chart_ids", "chart_id"), ("dimension_ids", "dim_id"), ("dimension_names", "dim_name")):
        assert [getattr(col, field) for col in window.columns] == doc[key]   # one column per entry, in order
    assert all(type(t) is int for t in (window.after, window.before, window.first_entry, window.last_entry))
    assert type(window.update_every) is int and window.update_every >= 1 and window.seconds >= 1
    for col in window.columns:
        assert all(isinstance(text, str) for text in (col.chart_id, col.dim_id, col.dim_name))
        check_rate(col.value), check_rate(col.latest)
    window.by_chart()


def check_labels(labels, doc):
    assert all(isinstance(chart, str) and isinstance(lab, dict) for chart, lab in labels.items())
    assert all(isinstance(k, str) and isinstance(v, str) for lab in labels.values() for k, v in lab.items())
    assert labels == {c: chart.get("labels") or {} for c, chart in (doc.get("charts") or {}).items()}


def check_alarms(alarms, doc):
    raised = [a for a in (doc.get("alarms") or {}).values()
              if isinstance(a, dict) and a.get("status") in ("WARNING", "CRITICAL")]
    assert len(alarms) == len(raised)
    for alarm in alarms:
        assert isinstance(alarm, Alarm) and alarm.status in ("WARNING", "CRITICAL")
        assert all(t is None or isinstance(t, str) for t in (alarm.name, alarm.chart, alarm.units, alarm.info))
        assert alarm.value is None or (_is_number(alarm.value) and math.isfinite(alarm.value))
    assert [a.status for a in alarms] == sorted((a.status for a in alarms), key=lambda s: s != "CRITICAL")


def _fixtures(*names_):
    return st.sampled_from([recorded_json(n) for n in names_])


# name: (parser, record check, well-formed documents, how NetdataClient asks for it)
API = {
    "info": (netdata_api.parse_info, check_info,
             _fixtures("info_single", "info_parent_with_child") | info_answers().map(lambda a: a[0]),
             lambda client: client.info()),
    "contexts": (netdata_api.parse_contexts, check_contexts,
                 _fixtures("contexts_netdrops", "contexts_stock_only") | contexts_answers().map(lambda a: a[0]),
                 lambda client: client.contexts()),
    "window": (lambda doc: netdata_api.parse_window(doc, "netdrops.iface_drops", "sum"), check_window,
               _fixtures("data_cpu_softnet_stat_stock", "data_system_softnet_stat_stock",
                         "data_iface_drops_vanished_veth", "data_aligned_window_before_history")
               | data_answers().map(lambda a: a[0]),
               lambda client: client.window("netdrops.iface_drops", 10, "sum")),
    "chart_labels": (netdata_api.parse_chart_labels, check_labels,
                     _fixtures("context_labels_iface_drops") | labels_answers().map(lambda a: a[0]),
                     lambda client: client.chart_labels("netdrops.iface_drops")),
    "alarms": (netdata_api.parse_alarms, check_alarms,
               _fixtures("alarms_backlog_warning") | alarms_answers().map(lambda a: a[0]),
               lambda client: client.alarms()),
}


def parses_or_refuses(name, doc):
    parser, check, _valid, _ask = API[name]
    try:
        records = parser(doc)
    except netdata_api.PARSE_ERRORS:
        return
    check(records, doc)


# -- Netdata API: any document ------------------------------------------------------------------

@CASES
@given(st.binary(max_size=300) | json_docs.map(encoded) | st.sampled_from([DEEP.encode(), b"1" * 5000, b"\xff"]))
@example(DEEP.encode())
@example(b"1e999")
def test_decode_json_any_bytes_is_a_value_or_value_error(body):
    """A value, or a ValueError with a reason (the client's 'sent malformed JSON (reason)')."""
    try:
        value = netdata_api.decode_json(body)
    except ValueError as err:
        assert str(err)
        return
    try:
        text = body.decode("utf-8")
        written = json.dumps(json.loads(text))
    except (ValueError, RecursionError):
        raise AssertionError("decoded {0!r}, which is no JSON".format(body[:40]))
    assert json.dumps(value) == written   # exactly what json reads, nothing made up


WINDOW = {"chart_ids": ["c"], "dimension_ids": ["d"], "dimension_names": ["n"], "result": {"data": [[0, 1]]},
          "after": 0, "before": 0}


@pytest.mark.parametrize("name", sorted(API))
@CASES
@given(doc=json_docs)
@example(doc=dict(WINDOW, result={"data": [[0, 10 ** 400]]}))            # OverflowError from float()
@example(doc=dict(WINDOW, result={"data": [[0, float("inf")]]}))         # 1e999: infinite drops
@example(doc=dict(WINDOW, before=float("inf")))                          # OverflowError from int()
@example(doc=dict(WINDOW, chart_ids=[["c"]]))                            # unhashable in by_chart()
@example(doc=dict(WINDOW, chart_ids="c", dimension_ids="d", dimension_names="n"))   # text as a list
@example(doc={"version": "v1.37.1", "cores_total": float("inf")})        # OverflowError
@example(doc={"version": "v1.37.1", "mirrored_hosts": [7]})               # --all-nodes: quote(7)
@example(doc={"version": "v1.37.1", "mirrored_hosts": "ab"})              # hosts 'a' and 'b'
@example(doc={"charts": {"c": {"labels": ["ab"]}}})                       # dict(['ab']) == {'a': 'b'}
@example(doc={"alarms": {"a": {"status": "WARNING", "name": 5}}})         # relevant_alarm: (5).lower()
@example(doc={"alarms": {"a": {"status": "CRITICAL", "name": "x", "value": float("inf")}}})
def test_api_parser_any_document(name, doc):
    """Records with the types the advisor relies on, or an error the client turns into one
    NetdataFormatError sentence."""
    parses_or_refuses(name, doc)


@pytest.mark.parametrize("name", sorted(API))
@CASES
@given(data=st.data())
def test_api_parser_near_valid_document(name, data):
    parses_or_refuses(name, data.draw(near_valid(API[name][2])))


# -- the same through a real NetdataClient and a loopback HTTP server ---------------------------

@pytest.fixture(scope="module")
def netdata():
    """One loopback server for the module, answering every request with its `answer`."""
    server = Replay(lambda path, context: server.answer)
    server.answer = (200, "application/json", b"{}")
    with server:
        yield server


def check_sentence(err):
    text = str(err)
    assert text and "\n" not in text and text.endswith(".")
    assert not isinstance(err, (NetdataUnreachable, NetdataTimeout))   # the server did answer


@CASES
@given(data=st.data())
def test_client_gives_records_or_one_sentence(netdata, data):
    name = data.draw(st.sampled_from(sorted(API)))
    _parser, check, valid, ask = API[name]
    status = data.draw(st.sampled_from([200, 200, 200, 200, 404, 500]))
    body = data.draw(json_docs.map(encoded) | near_valid(valid).map(encoded) | valid.map(encoded)
                     | st.binary(max_size=200) | st.text(max_size=80).map(str.encode))
    netdata.answer = (status, "application/json" if status == 200 else "text/plain", body)
    try:
        records = ask(NetdataClient(netdata.url, timeout=5))
    except NetdataError as err:
        check_sentence(err)
        if status == 200:   # (info() may also refuse a version it does not read)
            assert isinstance(err, (NetdataFormatError, NetdataVersionError))
        else:
            assert isinstance(err, (NetdataHTTPError, UnknownNode))
        return
    assert status == 200
    check(records, json.loads(body))


@CASES
@given(st.text(max_size=30))
@example("\x01")
@example("é")
def test_client_at_any_url_path_works_or_refuses_the_url(netdata, path):
    """What --url accepts, the client can ask; what it cannot ask is refused as a ValueError
    (the command line turns it into a usage error)."""
    netdata.answer = (200, "application/json", encoded(recorded_json("info_single")))
    try:
        client = NetdataClient(netdata.url + "/" + path, timeout=5)
    except ValueError:
        return
    try:
        check_info(client.info(), recorded_json("info_single"))
    except NetdataError as err:
        check_sentence(err)


# -- Netdata API: well-formed answers give back exactly their values ----------------------------

@CASES
@given(data_answers())
def test_window_round_trip(answer):
    doc, columns, (after, before, first, last, every) = answer
    window = netdata_api.parse_window(netdata_api.decode_json(encoded(doc)), "netdrops.iface_drops", "sum")
    assert window.columns == columns   # same values, same order: never a shifted column
    assert (window.after, window.before, window.first_entry, window.last_entry, window.update_every) == (
        after, before, first, last, every)
    check_window(window, doc)
    assert window.by_chart() == {c.chart_id: {d.dim_name: d.value for d in columns if d.chart_id == c.chart_id}
                                 for c in columns}


@CASES
@given(info_answers())
def test_info_round_trip(answer):
    doc, expected = answer
    assert netdata_api.parse_info(netdata_api.decode_json(encoded(doc))) == expected


@CASES
@given(alarms_answers())
def test_alarms_round_trip(answer):
    doc, expected = answer
    assert netdata_api.parse_alarms(netdata_api.decode_json(encoded(doc))) == expected


@CASES
@given(contexts_answers(), labels_answers())
def test_contexts_and_labels_round_trip(contexts, labels):
    assert netdata_api.parse_contexts(contexts[0]) == contexts[1]
    assert netdata_api.parse_chart_labels(labels[0]) == labels[1]


@CASES
@given(st.text(max_size=40) | st.from_regex(r"(https?://)?[a-z0-9.:\[\]]{0,20}(:[0-9]{0,6})?(/[a-z/]{0,8})?",
                                            fullmatch=True))
def test_normalize_url_any_text(url):
    try:
        normal = netdata_api.normalize_url(url)
    except ValueError:
        return
    assert normal.startswith(("http://", "https://")) and not normal.endswith("/")
    assert netdata_api.normalize_url(normal) == normal


@CASES
@given(st.sampled_from(["", "http://", "https://"]), hostnames | st.ip_addresses(v=4).map(str),
       st.none() | st.integers(1, 65535),
       st.lists(words(max_size=6), max_size=3).map(lambda p: "".join("/" + w for w in p)), st.sampled_from(["", "/"]))
def test_normalize_url_round_trip(scheme, host, port, path, slash):
    url = scheme + host + ("" if port is None else ":{0}".format(port)) + path + slash
    expected = (scheme or "http://") + host + ("" if port is None else ":{0}".format(port)) + path
    assert netdata_api.normalize_url(url) == expected


# -- /proc/stat ---------------------------------------------------------------------------------

proc_text = st.text(alphabet="cpu0123456789 \t\n-+_intr", max_size=300) | st.text(max_size=200)


@CASES
@given(proc_text)
@example("cpu+1 1 2 3 4\ncpu1_0 5 6 7 8\ncpu2 -5 1 1 1\n")
@example("cpu1 " + "9" * 5000 + "\n")   # int() refuses more than 4300 digits
@example("cpu01 1 2 3 4\n")
def test_proc_stat_any_text(text):
    ids = {f[3:].lstrip("0") or "0" for f in (line.split()[0] for line in text.splitlines() if line.split())
           if f.startswith("cpu") and f[3:].isascii() and f[3:].isdigit()}
    for cpu, times_ in procstat.parse_proc_stat(text).items():
        assert type(cpu) is int and str(cpu) in ids   # a CPU the text names in ASCII digits
        assert 0 <= times_.idle <= times_.total and 0 <= times_.softirq <= times_.total


@CASES
@given(st.dictionaries(st.integers(0, 8191), st.lists(u64, min_size=4, max_size=10), min_size=1, max_size=8),
       st.lists(u64, min_size=10, max_size=10))
def test_proc_stat_round_trip(cpus, aggregate):
    text = "cpu  {0}\n".format(" ".join(map(str, aggregate)))
    text += "".join("cpu{0} {1}\n".format(cpu, " ".join(map(str, v))) for cpu, v in cpus.items())
    text += "intr 715894 0 0\nctxt 1234\nbtime 1795700000\nsoftirq 1 2 3\n"
    parsed = procstat.parse_proc_stat(text)
    padded = {cpu: v[:8] + [0] * (8 - len(v)) for cpu, v in cpus.items()}   # older kernels: fewer columns
    assert parsed == {cpu: procstat.CpuTimes(total=sum(v), idle=v[3] + v[4], softirq=v[6], nice=v[1]) for cpu, v in padded.items()}


# -- /proc/net/udp and udp6 ---------------------------------------------------------------------

def _kernel_hex(address):
    """An address as /proc/net/udp{,6} prints it: each 32-bit word in host (little-endian) order."""
    raw = address.packed
    return "".join("{0:08X}".format(w) for w in struct.unpack("<" + "I" * (len(raw) // 4), raw))


@CASES
@given(st.text(alphabet="0123456789ABCDEF: \n-+_x", max_size=400) | st.text(max_size=200), st.sampled_from(["udp", "udp6"]))
@example(" sl\n 1: 0100007F:FFFFF 00000000:0000 07 00000000:-0000001 00:0 0 0 0 -5 2 0 -1\n", "udp")
def test_proc_net_udp_any_text(text, proto):
    for sock in udp_sockets.parse_proc_net_udp(text, proto):
        ipaddress.ip_address(sock.address)
        assert 0 <= sock.port <= 0xFFFF and sock.rx_queue >= 0 and sock.inode >= 0 and sock.drops >= 0


udp_socket = st.tuples(st.ip_addresses(), st.integers(0, 0xFFFF), u32, u64, u32)


@CASES
@given(st.lists(udp_socket, max_size=8), st.sampled_from(["udp", "udp6"]))
def test_proc_net_udp_round_trip(sockets, proto):
    version = 4 if proto == "udp" else 6
    sockets = [s for s in sockets if s[0].version == version]
    header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
    lines = ["{0:5d}: {1}:{2:04X} {3}:0000 07 {4:08X}:{5:08X} 00:00000000 00000000 {6:5d} {7:8d} {8} 2 "
             "0000000000000000 {9}\n".format(i, _kernel_hex(addr), port, "0" * len(_kernel_hex(addr)), 0, rx_queue,
                                             1000, 0, inode, drops)
             for i, (addr, port, rx_queue, inode, drops) in enumerate(sockets)]
    parsed = udp_sockets.parse_proc_net_udp(header + "".join(lines), proto)
    assert [(ipaddress.ip_address(s.address), s.port, s.rx_queue, s.inode, s.drops, s.proto) for s in parsed] == [
        (addr, port, rx_queue, inode, drops, proto) for addr, port, rx_queue, inode, drops in sockets]


# -- sysfs and other small files hostfacts reads ------------------------------------------------

@CASES
@given(st.none() | st.text(alphabet="0123456789-, \n", max_size=30) | st.text(max_size=20))
@example("0-99999999999")
@example("1_0")
@example("3-1")
def test_cpu_list_any_text(text):
    cpus = hostfacts.parse_cpu_list_file(text)
    assert cpus == sorted(set(cpus)) and all(type(c) is int and 0 <= c < hostfacts.MAX_CPUS for c in cpus)


@CASES
@given(st.sets(st.integers(0, hostfacts.MAX_CPUS - 1), max_size=64), st.sampled_from(["", "\n"]))
def test_cpu_list_round_trip(cpus, end):
    parts, ordered = [], sorted(cpus)
    while ordered:   # the kernel's '%*pbl': runs of CPUs as ranges
        lo = hi = ordered.pop(0)
        while ordered and ordered[0] == hi + 1:
            hi = ordered.pop(0)
        parts.append(str(lo) if lo == hi else "{0}-{1}".format(lo, hi))
    assert hostfacts.parse_cpu_list_file(",".join(parts) + end) == sorted(cpus)


@CASES
@given(st.text(alphabet="0123456789 \t\n", max_size=60) | st.text(max_size=40))
def test_uid_map_any_text(text):
    assert type(hostfacts.parse_uid_map(text)) is bool


@CASES
@given(st.lists(st.tuples(u32, u32, st.integers(1, 2 ** 32 - 1)), min_size=1, max_size=4),
       st.sampled_from([" ", "\t", "     "]))
def test_uid_map_round_trip(ranges, gap):
    text = "".join(gap + gap.join(map(str, r)) + "\n" for r in ranges)
    full = len(ranges) == 1 and ranges[0] == (0, 0, 4294967295)
    assert hostfacts.parse_uid_map(text) is not full


@CASES
@given(st.text(alphabet="CONFIG_HZ=0123456789-+ \n#y", max_size=80) | st.text(max_size=60))
@example("CONFIG_HZ=-250\n")
@example("CONFIG_HZ=0\n")
def test_kernel_hz_any_text(text):
    hz = hostfacts.parse_kernel_hz(text)
    assert hz is None or (type(hz) is int and hz > 0)   # recommend.py divides by it


@CASES
@given(st.sampled_from([100, 250, 300, 1000]), st.lists(st.sampled_from(
    ["# CONFIG_HZ_100 is not set", "CONFIG_HZ_250=y", "CONFIG_HZ_PERIODIC=y", "CONFIG_NO_HZ=y", "", "CONFIG_X=1"]),
    max_size=6))
def test_kernel_hz_round_trip(hz, others):
    assert hostfacts.parse_kernel_hz("\n".join(others + ["CONFIG_HZ={0}".format(hz)] + others) + "\n") == hz


NETNS_CHARS = string.ascii_letters + string.digits + "_.-"


@CASES
@given(st.text(max_size=120) | st.text(alphabet="ab (id: )0123456789\n-", max_size=80))
def test_netns_list_any_text(text):
    found = hostfacts.parse_netns_list(text)
    assert all(type(nsid) is int and isinstance(name, str) for nsid, name in found.items())


@CASES
@given(st.dictionaries(st.integers(0, 2 ** 31 - 1), words(NETNS_CHARS, NETNS_CHARS, 19), max_size=6),
       st.lists(words(NETNS_CHARS, NETNS_CHARS, 19), max_size=3))
def test_netns_list_round_trip(with_id, without_id):
    text = "".join("{0} (id: {1})\n".format(name, nsid) for nsid, name in with_id.items())
    text += "".join(name + "\n" for name in without_id)   # namespaces without an id here
    assert hostfacts.parse_netns_list(text) == with_id


# -- the values --apply writes and reads back ---------------------------------------------------

value_text = (st.text(max_size=24) | st.from_regex(values.INT_TEXT) | st.from_regex(values.MASK_TEXT)
              | st.sampled_from(["\u0663", "\u0661\u0660\u0660\u0660", "1_0", " 5", "5\n"]))


@CASES
@given(value_text, st.sampled_from(["int", "cpumask"]))
@example("\u0661\u0660\u0660\u0660", "int")
def test_setting_values_any_text(text, value_type):
    """check_value accepts only what the kernel file takes and parse reads back as that number."""
    parsed = values.parse(value_type, text)
    assert parsed is None or type(parsed) is int
    try:
        values.check_value("net.core.x", value_type, text)
    except values.SettingError as err:
        assert "net.core.x" in str(err)
        return
    text.encode("ascii")   # write_value encodes it so
    assert parsed == int(text.replace(",", ""), 10 if value_type == "int" else 16)


@CASES
@given(u64.filter(lambda n: n < 10 ** 19), st.integers(0, 2 ** 128 - 1), st.integers(1, 128))
def test_setting_values_round_trip(number, mask, ncpus):
    assert values.parse("int", str(number)) == number == values.parse("int", "{0}\n".format(number))
    mask &= (1 << ncpus) - 1
    text = format_cpu_mask(mask, ncpus)
    values.check_value("rps_cpus", "cpumask", text)
    assert values.parse("cpumask", text) == mask
    flow = "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt"
    assert values.settled(flow, "int", str(number), str(number))
    if number:   # the kernel rounds rps_flow_cnt up to a power of two
        assert values.settled(flow, "int", str(number), str(1 << (number - 1).bit_length()))


# -- sysctl.d files, netdrops' drop-in and udev rules -------------------------------------------

sysctl_keys = st.lists(words(max_size=8), min_size=2, max_size=4).map(".".join)
conf_values = st.text(string.ascii_letters + string.digits + ",._ -", max_size=16).map(str.strip)


@CASES
@given(st.text(max_size=300) | st.text(alphabet="net.core/=-#; \t\n12*ab", max_size=200))
def test_sysctl_conf_any_text(text):
    lines = text.splitlines()
    for item in persist.parse_sysctl_conf(text, "/etc/sysctl.d/x.conf"):
        assert item.key and not any(c in item.key for c in "*?[")
        assert 1 <= item.line <= len(lines) and "=" in lines[item.line - 1] and item.value == item.value.strip()


@CASES
@given(st.lists(st.tuples(sysctl_keys, conf_values, st.sampled_from(["=", " = ", "\t=  "]),
                          st.sampled_from(["", "-", " "]), st.booleans(), st.sampled_from(["", "# why", "; x", "  "])),
                max_size=8))
def test_sysctl_conf_round_trip(settings_):
    lines, expected = [], []
    for key, value, sep, prefix, slashes, before in settings_:
        if before:
            lines.append(before)
        written = key.replace(".", "/") if slashes else key
        lines.append(prefix + written + sep + value)
        expected.append((key, value, len(lines)))
    found = persist.parse_sysctl_conf("\n".join(lines) + "\n", "/etc/sysctl.d/90-x.conf")
    assert [(a.key, a.value, a.line) for a in found] == expected


comment_lines = st.lists(st.builds("# {0}: {1}".format, words(max_size=12),
                                   st.text(string.ascii_letters + string.digits + " ,.()/<>=-", max_size=40))
                         .map(str.strip), max_size=3)


@CASES
@given(st.dictionaries(sysctl_keys, st.tuples(comment_lines, conf_values.filter(bool)), max_size=6))
def test_dropin_round_trip(entries):
    text = persist.render_dropin(entries)
    assert persist.is_ours(text.encode())
    assert persist.parse_dropin(text) == entries   # keys, values, comments and their order


@CASES
@given(st.text(max_size=300) | st.text(alphabet="#net.core=5 \n`", max_size=120))
def test_dropin_any_text(text):
    for key, (comments, value) in persist.parse_dropin(text).items():
        assert isinstance(key, str) and isinstance(value, str) and all(c.startswith("#") for c in comments)


UDEV_CHARS = string.ascii_letters + string.digits + "_.@+%=-"
devices = words(UDEV_CHARS, UDEV_CHARS, 14)


@CASES
@given(st.lists(st.tuples(devices, st.sampled_from(["veth", "physical"]),
                          st.sampled_from(["queues/rx-0/rps_cpus", "queues/rx-1/rps_flow_cnt"]),
                          u32.map("{0:x}".format)), max_size=6))
def test_udev_rules_round_trip(rules):
    wanted = {}
    for device, kind, attribute, value in rules:
        rule = persist.udev_rule(persist.udev_match(device, kind), attribute, value)
        wanted[rule.rsplit('="', 1)[0]] = rule
    assert persist.parse_udev(persist.render_udev(wanted)) == wanted


@CASES
@given(st.text(max_size=20))
@example("eth0\n")
def test_udev_match_any_device_name(device):
    try:
        match = persist.udev_match(device, "physical")
    except persist.PersistError as err:
        assert "udev" in str(err)
        return
    assert match.endswith('KERNEL=="{0}"'.format(device)) and not any(c in device for c in '"*?[\n\r')


# -- the snapshot --apply leaves in /var/lib/netdrops/apply -------------------------------------

abs_paths = st.lists(words(max_size=7), min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
texts = st.text(max_size=12)


@st.composite
def snapshots(draw):
    def file_state(path):
        if not draw(st.booleans()):
            return persist.FileState(path, False)
        return persist.FileState(path, True, draw(st.binary(max_size=40)), draw(st.integers(0, 0o7777)),
                                 draw(u32), draw(u32))

    runtime = [snapshot.RuntimeEntry(p, draw(sysctl_keys), draw(st.sampled_from(["int", "cpumask"])),
                                     draw(texts), draw(texts), draw(texts), draw(texts))
               for p in draw(st.lists(abs_paths, max_size=4, unique=True))]
    files = [snapshot.FileEntry(file_state(p), draw(st.binary(max_size=40)), draw(texts))
             for p in draw(st.lists(abs_paths, max_size=3, unique=True))]
    metrics = st.fixed_dictionaries({"metric": texts, "kind": st.sampled_from(["softnet", "iface", "udp_rcvbuf"]),
                                     "cpu": st.none() | st.integers(0, 8191), "device": st.none() | devices,
                                     "before": st.none() | st.floats(0, 1e9)})
    verify = draw(st.none() | st.fixed_dictionaries({"window": st.floats(1, 600), "metrics": st.lists(metrics, max_size=4)}))
    return snapshot.Snapshot(status=draw(st.sampled_from([snapshot.APPLYING, snapshot.APPLIED])), host=draw(hostnames),
                             created=draw(texts), updated=draw(texts), runtime=runtime, files=files,
                             dirs=draw(st.lists(abs_paths, max_size=3)), state_dirs=draw(st.lists(abs_paths, max_size=2)),
                             verify=verify)


def check_snapshot(snap):
    """What --rollback, an --apply that finishes a killed run, and --verify use without checking."""
    assert snap.status in (snapshot.APPLYING, snapshot.APPLIED)
    for entry in snap.runtime:
        assert all(isinstance(getattr(entry, f), str) for f in snapshot.RuntimeEntry.__dataclass_fields__)
        assert entry.path.startswith("/")
    for entry in snap.files:
        state = entry.original
        assert isinstance(entry.applied, bytes) and isinstance(entry.purpose, str)
        assert isinstance(state.path, str) and state.path.startswith("/") and type(state.exists) is bool
        if state.exists:   # persist.restore writes them back as they were
            assert isinstance(state.data, bytes) and all(type(n) is int for n in (state.mode, state.uid, state.gid))
    assert all(isinstance(d, str) and d.startswith("/") for d in snap.dirs + snap.state_dirs)
    assert snap.verify is None or isinstance(snap.verify, dict)
    for m in (snap.verify or {}).get("metrics", []):
        assert isinstance(m, dict) and isinstance(m["metric"], str) and isinstance(m["kind"], str)
        assert m.get("cpu") is None or type(m["cpu"]) is int
        assert m.get("device") is None or isinstance(m["device"], str)
        assert m.get("before") is None or (_is_number(m["before"]) and math.isfinite(m["before"]))


@pytest.fixture(scope="module")
def state_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("state"))
    os.makedirs(root + snapshot.STATE_DIR)
    return root


def load_text(root, text):
    with open(root + snapshot.SNAPSHOT_FILE, "w", encoding="utf-8") as f:
        f.write(text)
    return snapshot.StateDir(root).load()


@CASES
@given(text=json_docs.map(json.dumps) | near_valid(snapshots().map(snapshot.Snapshot.to_dict)).map(json.dumps)
       | st.text(max_size=100) | st.sampled_from([DEEP, "[]", "null"]))
@example(text="[]")
@example(text=DEEP)
@example(text=json.dumps({"schema": snapshot.SCHEMA, "status": "applied", "runtime": {"a": 1}, "files": []}))
@example(text=json.dumps({"schema": snapshot.SCHEMA, "status": "applied", "runtime": [], "files": [
    {"original": {"path": "/a", "exists": False}, "applied_b64": "", "purpose": None}]}))
@example(text=json.dumps({"schema": snapshot.SCHEMA, "status": "applied", "runtime": [], "files": [
    {"original": {"path": "/a", "exists": True, "data_b64": "eA==", "sha256": "0" * 64, "mode": 420, "uid": 0,
                  "gid": 0}, "applied_b64": ""}]}))   # bytes that are not the ones saved
@example(text=json.dumps({"schema": snapshot.SCHEMA, "status": "applied", "runtime": [], "files": [],
                          "verify": {"metrics": [{"metric": "m", "kind": "iface", "before": "1"}]}}))
@example(text=json.dumps({"schema": snapshot.SCHEMA, "status": "applied", "runtime": [], "files": [],
                          "verify": {"metrics": [{"metric": "m", "kind": "iface", "before": 10 ** 400}]}}))
def test_snapshot_any_text_loads_or_state_error(state_root, text):
    try:
        snap = load_text(state_root, text)
    except snapshot.StateError as err:
        assert state_root + snapshot.SNAPSHOT_FILE in str(err)
        return
    check_snapshot(snap)


@CASES
@given(snapshots())
def test_snapshot_round_trip(snap):
    """What StateDir.save writes, StateDir.load gives back (the same JSON, without the fsyncs)."""
    loaded = snapshot.Snapshot.from_dict(json.loads(json.dumps(snap.to_dict(), indent=1)))
    assert loaded == snap   # every original value, byte for byte
    check_snapshot(loaded)


def test_snapshot_saved_and_loaded(state_root):
    snap = snapshot.Snapshot(runtime=[snapshot.RuntimeEntry("/proc/sys/net/core/netdev_max_backlog",
                                                            "net.core.netdev_max_backlog", "int", "1000", "5000")],
                             files=[snapshot.FileEntry(persist.FileState("/etc/sysctl.d/90-netdrops.conf", False), b"x")])
    state = snapshot.StateDir(state_root)
    state.save(snap)
    assert state.load() == snap
