"""The `netdrops-advisor` Function on the real Netdata v2.11 (../shared/netdata-v2), over its
local API: `/api/v3/function` serves Functions on v2 (1.37 answered 403 to all but Cloud).

What v2.11 does, seen with a plugin that logged every byte it received (and read in its source,
src/plugins.d/pluginsd_functions.c, src/database/rrdfunctions-inflight.c):
- a GET arrives as `FUNCTION <tx> <timeout> "<function>" "0x<access>" "<source>"`, a POST as
  `FUNCTION_PAYLOAD ... "<content type>"`, the body, `FUNCTION_PAYLOAD_END`;
- the caller's `X-Transaction-Id` header is the transaction the plugin sees;
- when the HTTP client goes away, v2 answers it 499 itself and sends `FUNCTION_CANCEL <tx>` to
  the plugin at once; the transaction stays taken (a new call with the same id gets 400
  "Duplicate transaction.") until the plugin answers it or the call's timeout passes. So a
  reused transaction id accepted right after a cancel proves the plugin answered the cancel;
- an answer to a transaction v2 no longer holds is logged: "transaction is not found".
"""

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from netdrops_advisor import function as advisor_function
from netdrops_collector.frontends import functions

PLUGIN = "netdrops.plugin"
FAULT_DELAY = 4     # seconds each call waits in the cancel test's agent (functions.FAULT_DELAY_ENV)


def function_url(nd, text, **params):
    query = dict(params, function=text)
    return nd.url + "/api/v3/function?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def request(nd, text, body=None, transaction=None, wait=20, **params):
    """GET (or POST with a JSON body) /api/v3/function -> (HTTP status, content type, body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if transaction:
        headers["X-Transaction-Id"] = transaction
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(function_url(nd, text, **params), data=data, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=wait) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def start_agent(factory, name, env=None):
    nd = factory(name, env=env)
    nd.install_netdrops("plugin")
    nd.start()
    nd.wait_for(lambda: advisor_function.NAME in nd.api("/api/v1/info").get("functions", {}), 60,
                what="netdrops-advisor in /api/v1/info functions")
    nd.wait_chart("netdrops_local.softnet_dropped")
    time.sleep(2)  # two ticks of samples
    return nd


def plugin_pids(nd):
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/{0}/cmdline".format(entry), "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(arg.startswith(nd.plugins_dir.encode()) and arg.endswith(PLUGIN.encode()) for arg in argv):
            pids.append(int(entry))
    return pids


def agent_lines(nd, *needles):
    return [line for name in ("daemon.log", "collector.log") for line in nd.log_text(name).splitlines()
            if any(n in line for n in needles)]


def check_v2_table(doc):
    """A v2 simple table (FUNCTION_UI_REFERENCE.md, Simple Table Format)."""
    assert doc["status"] == 200 and doc["type"] == "table" and doc["has_history"] is False
    assert doc["help"] == advisor_function.HELP
    columns = doc["columns"]
    assert sorted(c["index"] for c in columns.values()) == list(range(len(columns)))
    assert [name for name, c in columns.items() if c["unique_key"]] == ["Row"]
    for col in columns.values():
        assert {"index", "name", "type", "visible", "visualization", "value_options", "sort", "sortable",
                "sticky", "filter", "summary"} <= set(col)
        assert col["type"] in ("string", "integer") and col["visualization"] == "value"
    assert doc["default_sort_column"] in columns
    assert doc["data"] and all(len(row) == len(columns) for row in doc["data"])
    assert "window" in doc["accepted_params"]
    return doc


def test_v2_answers_get_post_and_info_over_its_local_api(netdata_v2_factory):
    nd = start_agent(netdata_v2_factory, "fnv2")
    pids = plugin_pids(nd)

    status, ctype, body = request(nd, advisor_function.NAME)
    assert status == 200 and ctype.startswith("application/json")
    doc = check_v2_table(json.loads(body))
    assert doc["report"]["node"] == nd.hostname
    assert doc["report"]["window"]["seconds"] >= 1

    # v2 passes `=` through (1.37 rewrote it to `:`): both spellings work
    status, ctype, body = request(nd, advisor_function.NAME + " window=10 format=text")
    assert status == 200 and ctype.startswith("text/plain") and "backlog drops" in body

    # the dashboard's preflight: what it may send, and `v: 3` to send it as POST
    status, _ctype, body = request(nd, advisor_function.NAME + " info")
    info = json.loads(body)
    assert status == 200 and info["v"] == 3 and info["status"] == 200 and info["type"] == "table"
    assert info["has_history"] is False and "window" in info["accepted_params"]
    window = [p for p in info["required_params"] if p["id"] == "window"][0]
    assert [o["id"] for o in window["options"] if o.get("defaultSelected")] == [str(advisor_function.WINDOW)]

    # POST with a JSON body, as v2's dashboard sends after `info`
    status, _ctype, body = request(nd, advisor_function.NAME, body={"selections": {"window": ["30"]}})
    assert status == 200
    check_v2_table(json.loads(body))
    status, ctype, body = request(nd, advisor_function.NAME, body={"format": "json", "window": 10})
    assert status == 200 and json.loads(body)["schema"] == "netdrops-advisor/1"
    # a bad value in the body: an answer v2's dashboard can show (errorMessage), at once
    started = time.monotonic()
    status, _ctype, body = request(nd, advisor_function.NAME, body={"selections": {"window": ["5"]}})
    assert status == 400 and "window" in json.loads(body)["errorMessage"]
    assert time.monotonic() - started < 5

    assert plugin_pids(nd) == pids, "the plugin was restarted while answering"
    ours = agent_lines(nd, PLUGIN, "FUNCTION", "transaction")
    assert not [line for line in ours if "level=error" in line or "malformed" in line], ours


def open_and_drop(nd, text, transaction, after):
    """A GET whose client goes away `after` seconds into the call, as a closed dashboard tab."""
    sock = socket.create_connection(("127.0.0.1", nd.port))
    try:
        sock.sendall("GET {0} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Transaction-Id: {1}\r\n\r\n".format(
            function_url(nd, text)[len(nd.url):], transaction).encode())
        time.sleep(after)
    finally:
        sock.close()


def stop_as_systemd_does(nd, timeout=30):
    """SIGTERM to every process of the agent at once: netdata.service of v2.11 sets no KillMode,
    so systemd's default (control-group) signals the agent, its spawn server and its plugins
    together. (A lone SIGTERM to the agent, as `docker stop` gives, ends every external plugin,
    Netdata's own too, with SIGTERM and SIGKILL in the same instant: seen on v2.11 for its
    network-viewer.plugin, which it then logs as 'exited abnormally'.)"""
    os.killpg(nd.proc.pid, signal.SIGTERM)
    nd.proc.wait(timeout=timeout)
    nd.stop()


def test_v2_cancels_a_running_call_the_plugin_answers_it_once_and_serves_the_next(netdata_v2_factory):
    nd = start_agent(netdata_v2_factory, "fncancel", env={functions.FAULT_DELAY_ENV: str(FAULT_DELAY)})
    pids = plugin_pids(nd)
    assert len(pids) == 1

    transaction = uuid.uuid4().hex
    open_and_drop(nd, advisor_function.NAME, transaction, after=1)  # cancelled 1 s into its 4 s
    dropped = time.monotonic()
    # the same transaction is free again once the plugin answered the cancel (unanswered, v2
    # keeps it for the call's timeout and refuses it at once with 400 "Duplicate transaction.")
    while True:
        started = time.monotonic()
        status, _ctype, body = request(nd, advisor_function.NAME, transaction=transaction)
        if status != 400 or started - dropped > 3:
            break
        time.sleep(0.1)
    took = time.monotonic() - started
    assert status == 200, body
    assert started - dropped < 3, "the cancelled transaction was still taken after 3 s"
    check_v2_table(json.loads(body))
    assert FAULT_DELAY - 0.5 < took < FAULT_DELAY + 3  # a call of its own, not queued behind the cancelled one
    print("cancelled transaction free again {0:.2f} s after the client went away".format(started - dropped))

    # a call that outlives its timeout: v2 answers 504 and cancels it with the next call; the
    # plugin answers neither (v2 has forgotten the transaction)
    status, _ctype, body = request(nd, advisor_function.NAME, timeout=2)
    assert status == 504, body
    status, _ctype, body = request(nd, advisor_function.NAME + " format=json")
    assert status == 200 and json.loads(body)["schema"] == "netdrops-advisor/1"
    time.sleep(1)

    # one answer per transaction: v2 logs any answer to a transaction it does not hold
    assert not agent_lines(nd, "is not found", "malformed"), \
        agent_lines(nd, "transaction", "FUNCTION")
    assert plugin_pids(nd) == pids, "the plugin was restarted"

    stop_as_systemd_does(nd)
    assert not plugin_pids(nd)
    ours = agent_lines(nd, PLUGIN, "pid {0} ".format(pids[0]))
    # it exited 0 on its own, before the agent could kill it: v2 logs a plugin killed by a signal
    # or exiting non-zero. v2.11's own spawn server, stopping at the same moment, sometimes goes
    # before it reports that exit (1 stop in 6 here): the agent then tries SIGKILL, which fails
    # (the plugin is gone already), and logs the plugin as 'exited abnormally'.
    assert not [line for line in ours if "killed by signal" in line or "exit code" in line], ours
    if [line for line in ours if "abnormally" in line or "giving up" in line]:
        assert [line for line in ours if "SIGKILL of pid {0} failed".format(pids[0]) in line], ours
