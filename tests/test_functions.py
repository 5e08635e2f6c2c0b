"""The external plugin's Netdata Function `netdrops-advisor`: the installed plugin answering
FUNCTION lines on its stdin, real drops from the lab diagnosed by it, and a real Netdata 1.37
passing a call to it and the answer back.

Netdata 1.37 answers /api/v1/function with 403 to everyone but Netdata Cloud (its docs: Functions
are "available only on Netdata Cloud"); a parent's call reaches a child over the streaming
connection, which is how Cloud reaches nodes behind a parent. So the real-Netdata test plays that
parent: a loopback socket that a real 1.37 child streams to, sending the FUNCTION command 1.37's
parent sends and reading the FUNCTION_RESULT the child relays from our plugin.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from lab import HEAVY, RPS_TARGET_CPU
from netdrops_advisor import function as advisor_function
from netdrops_collector.frontends import functions
from netdrops_collector.kernel import softnet
from protocol_check import parse

PLUGIN_ENV = {"NETDATA_PLUGINS_DIR": "/usr/lib/netdata/plugins.d"}  # as Netdata sets it


def install_plugin(lib_root, plugins_dir, config_dir):
    subprocess.run(["netdrops-collector", "install", "--mode", "plugin", "--plugins-dir", plugins_dir,
                    "--pythond-dir", os.path.join(lib_root, "python.d"), "--config-dir", config_dir,
                    "--lib-dir", os.path.join(lib_root, "netdrops-lib")],
                   check=True, capture_output=True, text=True)
    return os.path.join(plugins_dir, "netdrops.plugin")


class PluginProcess:
    """The installed netdrops.plugin launcher with a pipe on stdin, as Netdata runs it."""

    def __init__(self, tmp_path, env_extra=PLUGIN_ENV):
        dirs = {k: str(tmp_path / k) for k in ("plugins", "config", "lib")}
        launcher = install_plugin(dirs["lib"], dirs["plugins"], dirs["config"])
        env = dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"], **env_extra)
        self.proc = subprocess.Popen([launcher, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.out = b""
        self.err = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return
            with self.lock:
                self.out += chunk

    def text(self):
        with self.lock:
            return self.out.decode()

    def send(self, line):
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def wait_for(self, needle, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no {0!r} from the plugin in {1} s; stderr: {2}".format(
            needle, timeout, self.proc.stderr.read1(100000).decode() if self.proc.poll() is not None else ""))

    def call(self, function, timeout=15):
        """Send a FUNCTION line as Netdata does; (status, content type, body)."""
        transaction = uuid.uuid4().hex
        begin, end = "FUNCTION_RESULT_BEGIN " + transaction + " ", "\nFUNCTION_RESULT_END\n"
        self.send('FUNCTION {0} 10 "{1}"\n'.format(transaction, function))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            start = text.find(begin)
            stop = text.find(end, start)
            if start >= 0 and stop > 0:
                head, body = text[start:stop].split("\n", 1)
                words = head.split()
                assert len(words) == 5 and words[4].isdigit(), head  # ... status type expires
                return int(words[2]), words[3], body
            assert self.proc.poll() is None, "the plugin exited"
            time.sleep(0.02)
        raise AssertionError("no answer to {0!r} in {1} s".format(function, timeout))

    def results(self, transaction):
        """[(status, content type, body)] of every answer written for one transaction."""
        out = []
        for block in self.text().split("FUNCTION_RESULT_BEGIN " + transaction + " ")[1:]:
            head, _, rest = block.partition("\n")
            words = head.split()
            out.append((int(words[0]), words[1], rest.split("\nFUNCTION_RESULT_END\n", 1)[0]))
        return out

    def wait_result(self, transaction, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.results(transaction)
            if found and "FUNCTION_RESULT_END" in self.text().split("FUNCTION_RESULT_BEGIN " + transaction, 1)[1]:
                return found[0]
            assert self.proc.poll() is None, "the plugin exited"
            time.sleep(0.02)
        raise AssertionError("no answer for {0} in {1} s".format(transaction, timeout))

    def stderr_now(self):
        """What the plugin logged so far (stderr is read without waiting for its end)."""
        os.set_blocking(self.proc.stderr.fileno(), False)
        chunk = self.proc.stderr.read() or b""
        self.err += chunk
        return self.err.decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        os.set_blocking(self.proc.stderr.fileno(), True)
        err = (self.err + (self.proc.stderr.read() or b"")).decode()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


@pytest.fixture
def plugin(tmp_path):
    proc = PluginProcess(tmp_path)
    yield proc
    err = proc.stop()
    assert "Traceback" not in err, err


def online_cpus():
    return softnet.parse_cpu_list(open("/sys/devices/system/cpu/online").read())


def check_table(doc):
    """The table layout of Netdata 1.37's own Function (apps.plugin `processes`)."""
    assert doc["status"] == 200 and doc["type"] == "table"
    columns = doc["columns"]
    assert sorted(c["index"] for c in columns.values()) == list(range(len(columns)))
    for name, col in columns.items():
        assert col["name"] == name
        assert {"index", "unique_key", "visible", "type", "sort", "sortable", "sticky", "summary"} <= set(col)
    assert [c for c in columns.values() if c["unique_key"]] == [columns["Row"]]
    assert doc["default_sort_column"] in columns
    assert doc["data"], "an empty table"
    assert all(len(row) == len(columns) for row in doc["data"])
    assert len({row[0] for row in doc["data"]}) == len(doc["data"])
    assert doc["report"]["schema"] == "netdrops-advisor/1"
    return {name: col["index"] for name, col in columns.items()}


def rows_of(doc, kind):
    idx = check_table(doc)
    return [dict(zip(sorted(idx, key=idx.get), row)) for row in doc["data"] if row[idx["Type"]] == kind]


def test_plugin_registers_the_function_and_answers_on_stdin(plugin):
    text = plugin.wait_for('FUNCTION GLOBAL "netdrops-advisor"')
    stream = parse(text[:text.rindex("\n") + 1])  # strict: every line is plugins.d protocol
    assert stream.functions["netdrops-advisor"] == (advisor_function.TIMEOUT, advisor_function.HELP)
    # announced once, after the first charts, so it never sits inside a BEGIN/END block
    assert text.index("CHART ") < text.index("FUNCTION GLOBAL")
    time.sleep(2.5)  # a few ticks of samples
    status, ctype, body = plugin.call("netdrops-advisor")
    assert (status, ctype) == (200, "application/json")
    doc = json.loads(body)
    report = doc["report"]
    assert report["source"]["kind"] == "kernel"
    assert "netdrops.plugin's own samples" in report["source"]["detail"]
    assert 1 <= report["window"]["seconds"] <= 5
    assert [c["cpu"] for c in report["evidence"]["cpus"]] == online_cpus()
    backlog = int(open("/proc/sys/net/core/netdev_max_backlog").read())
    assert report["evidence"]["tuning"]["netdev_max_backlog"] == backlog
    measures = rows_of(doc, "measure")
    assert "backlog drops, all CPUs" in [r["Item"] for r in measures]
    if report["status"] == "healthy":
        assert rows_of(doc, "healthy") and not rows_of(doc, "change")

    status, ctype, body = plugin.call("netdrops-advisor format:text")
    assert (status, ctype) == (200, "text/plain") and "backlog drops" in body
    status, ctype, body = plugin.call("netdrops-advisor format:json window:10")
    assert status == 200 and json.loads(body)["schema"] == "netdrops-advisor/1"
    status, ctype, body = plugin.call("netdrops-advisor help")
    assert (status, ctype, body.strip()) == (200, "text/plain", advisor_function.HELP)
    status, ctype, body = plugin.call("netdrops-advisor window:5")
    assert status == 400 and "window" in json.loads(body)["error_message"]
    status, ctype, body = plugin.call("processes")
    assert status == 404 and json.loads(body)["status"] == 404


def test_calls_do_not_hold_up_collection(plugin):
    plugin.wait_for('FUNCTION GLOBAL "netdrops-advisor"')
    time.sleep(1.5)
    begins = lambda: plugin.text().count("BEGIN netdrops_local.softnet_dropped")  # noqa: E731
    before, start = begins(), time.monotonic()
    answered = 0
    while time.monotonic() - start < 4:
        status, _ctype, _body = plugin.call("netdrops-advisor")
        answered += status == 200
    elapsed = time.monotonic() - start
    ticks = begins() - before
    assert answered >= 20, "only {0} answers in {1:.1f} s".format(answered, elapsed)
    assert ticks >= int(elapsed) - 1, "{0} ticks in {1:.1f} s while answering".format(ticks, elapsed)


def test_plugin_exits_when_netdata_closes_its_stdin(plugin):
    plugin.wait_for("BEGIN ")
    start = time.monotonic()
    plugin.proc.stdin.close()
    assert plugin.proc.wait(timeout=5) == 0
    assert time.monotonic() - start < 3


def test_stdin_at_end_outside_netdata_is_not_a_reason_to_stop(tmp_path):
    proc = PluginProcess(tmp_path, env_extra={})  # run by hand: no NETDATA_PLUGINS_DIR
    try:
        proc.wait_for("BEGIN ")
        proc.proc.stdin.close()
        mark = len(proc.text())
        time.sleep(2.5)
        assert proc.proc.poll() is None
        assert "BEGIN " in proc.text()[mark:], "collection stopped after stdin closed"
    finally:
        err = proc.stop()
    assert proc.proc.returncode == 0 and "Traceback" not in err


def test_lab_drops_diagnosed_by_the_function(tmp_path, drop_lab):
    proc = PluginProcess(tmp_path)
    try:
        proc.wait_for("BEGIN ")
        drop_lab.run_traffic(HEAVY)
        time.sleep(6)
        status, _ctype, body = proc.call("netdrops-advisor window:10")
    finally:
        drop_lab.stop_traffic()
        err = proc.stop()
    assert "Traceback" not in err, err
    assert status == 200
    doc = json.loads(body)
    problems = {r["Item"]: r for r in rows_of(doc, "problem")}
    assert "backlog_overflow" in problems, doc["report"]["findings"]
    where = problems["backlog_overflow"]["Where"]
    assert "CPU {0}".format(RPS_TARGET_CPU) in where and drop_lab.host_ifname in where
    changes = {r["Item"]: r for r in rows_of(doc, "change")}
    backlog = changes["net.core.netdev_max_backlog"]
    assert backlog["Now"] == str(HEAVY.backlog)  # the lab's netdev_max_backlog
    assert int(backlog["Target"]) > HEAVY.backlog
    assert backlog["Command"].startswith("sysctl -w net.core.netdev_max_backlog=")
    veth = [i for i in doc["report"]["evidence"]["interfaces"] if i["name"] == drop_lab.host_ifname]
    assert veth and veth[0]["kind"] == "veth" and veth[0]["inbound_drops"] > 0


# -- what Netdata v2 sends on stdin (seen on v2.11; see functions.py) --------------------------

V2_TAIL = '"0x8" "method=none,role=any,permissions=0x8,ip=localhost"'  # access and source, as v2.11 sends them


def test_plugin_answers_the_lines_netdata_v2_sends(plugin):
    plugin.wait_for('FUNCTION GLOBAL "netdrops-advisor"')
    time.sleep(2.5)
    tx = uuid.uuid4().hex
    plugin.send('FUNCTION {0} 10 "netdrops-advisor window=10" {1}\n'.format(tx, V2_TAIL))
    status, ctype, body = plugin.wait_result(tx)
    doc = json.loads(body)
    assert (status, ctype) == (200, "application/json") and doc["has_history"] is False
    check_table(doc)

    # a POST: FUNCTION_PAYLOAD, the JSON body (here on two lines), FUNCTION_PAYLOAD_END
    tx = uuid.uuid4().hex
    plugin.send('FUNCTION_PAYLOAD {0} 10 "netdrops-advisor" {1} "application/json"\n'
                '{{"selections": {{"window": ["10"],\n"format": ["json"]}}}}\nFUNCTION_PAYLOAD_END\n'.format(tx, V2_TAIL))
    status, _ctype, body = plugin.wait_result(tx)
    assert status == 200 and json.loads(body)["schema"] == "netdrops-advisor/1"
    tx = uuid.uuid4().hex
    plugin.send('FUNCTION_PAYLOAD {0} 10 "netdrops-advisor" {1} "application/json"\n'
                'not json\nFUNCTION_PAYLOAD_END\n'.format(tx, V2_TAIL))
    status, _ctype, body = plugin.wait_result(tx)
    assert status == 400 and "JSON" in json.loads(body)["errorMessage"]

    tx = uuid.uuid4().hex
    plugin.send('FUNCTION {0} 10 "netdrops-advisor info" {1}\n'.format(tx, V2_TAIL))
    status, _ctype, body = plugin.wait_result(tx)
    info = json.loads(body)
    assert status == 200 and info["v"] == 3 and "window" in info["accepted_params"]

    # progress and cancel of calls already answered: nothing to say, nothing written, no log line
    before = plugin.text().count("FUNCTION_RESULT_BEGIN")
    plugin.send("FUNCTION_PROGRESS {0}\nFUNCTION_CANCEL {0}\nFUNCTION_CANCEL {1}\n".format(tx, uuid.uuid4().hex))
    time.sleep(1)
    assert plugin.text().count("FUNCTION_RESULT_BEGIN") == before
    assert "ERROR" not in plugin.stderr_now()
    assert len(plugin.results(tx)) == 1


def test_a_cancelled_call_is_answered_once_with_499_and_the_next_one_served(tmp_path):
    delay = 3
    proc = PluginProcess(tmp_path, env_extra=dict(PLUGIN_ENV, **{functions.FAULT_DELAY_ENV: str(delay)}))
    try:
        proc.wait_for('FUNCTION GLOBAL "netdrops-advisor"')
        time.sleep(2)
        cancelled, following = uuid.uuid4().hex, uuid.uuid4().hex
        proc.send('FUNCTION {0} 10 "netdrops-advisor" {1}\n'.format(cancelled, V2_TAIL))
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send("FUNCTION_CANCEL {0}\n".format(cancelled))
        status, _ctype, body = proc.wait_result(cancelled, timeout=2)
        answered = time.monotonic() - sent
        assert status == functions.CANCELLED and "cancelled" in json.loads(body)["errorMessage"]
        assert answered < 0.5, "cancel answered after {0:.2f} s".format(answered)
        proc.send('FUNCTION {0} 10 "netdrops-advisor format=json" {1}\n'.format(following, V2_TAIL))
        status, _ctype, body = proc.wait_result(following, timeout=delay + 5)
        assert status == 200 and json.loads(body)["schema"] == "netdrops-advisor/1"
        time.sleep(1)  # past the cancelled call's own delay: it writes nothing more
        assert len(proc.results(cancelled)) == 1 and len(proc.results(following)) == 1
    finally:
        err = proc.stop()
    assert "Traceback" not in err and "ERROR" not in err, err


def test_quit_without_a_newline_ends_the_plugin_at_once_with_0(plugin):
    plugin.wait_for("BEGIN ")
    sent = time.monotonic()
    plugin.send("QUIT")  # as v2.11 sends it; stdin stays open
    assert plugin.proc.wait(timeout=5) == 0
    assert time.monotonic() - sent < 2


def test_params_are_read_in_both_spellings_and_from_a_json_body():
    assert advisor_function.parse_params(["window:30", "format:text"]) == (30, "text")
    assert advisor_function.parse_params(["window=30", "format=json"]) == (30, "json")
    assert advisor_function.parse_params(["info", "after:1", "before:2"]) == (advisor_function.WINDOW, "info")
    assert advisor_function.payload_params('{"selections": {"window": ["120"]}, "after": 1}', "application/json") == \
        ["window:120"]
    assert advisor_function.payload_params('{"window": 30, "format": "text"}', None) == ["window:30", "format:text"]
    assert advisor_function.payload_params("", "application/json") == []
    for body in ('[1]', '{"window": [1, 2]}', '{"window": true}', '{'):
        with pytest.raises(functions.CallError) as error:
            advisor_function.payload_params(body, "application/json")
        assert error.value.status == 400


def test_stdin_commands_are_parsed_as_v2_and_137_send_them():
    reader = functions.CommandReader()
    kind, call = reader.feed('FUNCTION abc 7 "netdrops-advisor window:10"')  # 1.37: three words
    assert kind == "call" and (call.transaction, call.timeout, call.name, call.params) == \
        ("abc", 7, "netdrops-advisor", ["window:10"])
    assert reader.feed('FUNCTION_PAYLOAD t2 10 "netdrops-advisor" {0} "application/json"'.format(V2_TAIL)) is None
    assert reader.feed('{"window":') is None and reader.feed('30}') is None
    kind, call = reader.feed("FUNCTION_PAYLOAD_END")
    assert kind == "call" and call.payload == '{"window":\n30}' and call.content_type == "application/json"
    assert reader.feed("FUNCTION_CANCEL t2") == ("cancel", "t2")
    assert reader.feed("FUNCTION_PROGRESS t2") == ("progress", "t2")
    assert reader.feed("QUIT") == ("quit", None)
    assert reader.feed('FUNCTION "unclosed') == ("malformed", 'FUNCTION "unclosed')
    assert reader.feed("") is None and reader.feed("SOMETHING else") is None


# -- the plugin's Function machinery, without a plugin --------------------------------------

class Captured:
    """A LockedWriter's stand-in: the pieces of protocol written, in order."""

    def __init__(self):
        self.pieces = []
        self.lock = threading.Lock()

    def write_and_flush(self, text):
        with self.lock:
            self.pieces.append(text)

    def results(self):
        """[(transaction, status, content type, body)] of every FUNCTION_RESULT written."""
        out = []
        for piece in list(self.pieces):
            head, _, rest = piece.partition("\n")
            words = head.split()
            out.append((words[1], int(words[2]), words[3], rest.rsplit("FUNCTION_RESULT_END\n", 1)[0].rstrip("\n")))
        return out

    def wait(self, count, timeout=5):
        deadline = time.monotonic() + timeout
        while len(self.pieces) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.results()


def call_of(line):
    return functions.parse_call(line)


def echo(call):
    if "fail" in call.params:
        raise functions.CallError(409, "asked to fail")
    if "crash" in call.params:
        raise KeyError("boom")
    return 200, "text/plain", " ".join(call.params) or "-"


def test_the_host_registers_and_answers_by_name_with_netdatas_error_shape():
    host = functions.FunctionHost(update_every=3)
    assert host.registration() == ""
    host.register("echo", 7, "Says it back.", echo)
    host.register("other", 10, "Another one.", echo)
    assert host.registration() == 'FUNCTION GLOBAL "echo" 7 "Says it back."\nFUNCTION GLOBAL "other" 10 "Another one."\n'
    with pytest.raises(ValueError):
        host.register("two words", 10, "x", echo)
    with pytest.raises(ValueError):
        host.register("q", 10, 'a "quoted" help', echo)

    before = time.time()
    head, body = host.answer(call_of('FUNCTION t1 10 "echo a b"')).split("\n", 1)
    words = head.split()
    assert words[:4] == ["FUNCTION_RESULT_BEGIN", "t1", "200", "text/plain"] and body == "a b\nFUNCTION_RESULT_END\n"
    assert int(before) + 3 <= int(words[4]) <= time.time() + 3  # expires after update_every
    for line, status, message in (('FUNCTION t2 10 "nothing"', 404, "netdrops.plugin has no function 'nothing'"),
                                  ('FUNCTION t3 10 "echo fail"', 409, "asked to fail"),
                                  ('FUNCTION t4 10 "echo crash"', 500, "echo failed: KeyError: 'boom'")):
        head, body = host.answer(call_of(line)).split("\n", 1)
        assert head.split()[2:4] == [str(status), "application/json"]
        doc = json.loads(body.split("FUNCTION_RESULT_END")[0])
        assert doc == {"status": status, "errorMessage": message, "error_message": message}


def test_calls_run_on_threads_and_a_cancel_is_answered_once_with_499():
    started, release = threading.Event(), threading.Event()

    def slow(call):
        started.set()
        release.wait(5)
        return 200, "text/plain", "cancelled" if call.cancelled.is_set() else "done"

    host = functions.FunctionHost(update_every=1)
    host.register("slow", 10, "Waits.", slow)
    host.register("echo", 10, "Says it back.", echo)
    out = Captured()
    dispatcher = functions.Dispatcher(host, out, max_calls=2)
    dispatcher.start(call_of('FUNCTION s1 10 "slow"'))
    assert started.wait(5)
    dispatcher.start(call_of('FUNCTION e1 10 "echo hi"'))  # not held up by the slow one
    assert out.wait(1) == [("e1", 200, "text/plain", "hi")]
    dispatcher.cancel("s1")
    dispatcher.cancel("s1")        # once only
    dispatcher.cancel("unknown")   # not ours: nothing
    release.set()
    time.sleep(0.2)                # the slow call ends, having seen its cancel: no second answer
    results = out.results()
    assert [r[:2] for r in results] == [("e1", 200), ("s1", functions.CANCELLED)]
    assert json.loads(results[1][3])["errorMessage"] == "the call was cancelled"


def test_more_calls_than_max_calls_are_answered_503_at_once():
    release = threading.Event()
    host = functions.FunctionHost(update_every=1)
    host.register("slow", 10, "Waits.", lambda call: (release.wait(5), (200, "text/plain", "ok"))[1])
    out = Captured()
    dispatcher = functions.Dispatcher(host, out, max_calls=1)
    dispatcher.start(call_of('FUNCTION a 10 "slow"'))
    dispatcher.start(call_of('FUNCTION b 10 "slow"'))
    assert [r[:2] for r in out.wait(1)] == [("b", 503)]
    release.set()
    assert [r[:2] for r in out.wait(2)] == [("b", 503), ("a", 200)]


def test_the_fault_delay_is_read_only_from_its_variable_and_a_cancel_ends_it():
    assert functions.fault_delay({}) == 0.0
    assert functions.fault_delay({functions.FAULT_DELAY_ENV: "2.5"}) == 2.5
    assert functions.fault_delay({functions.FAULT_DELAY_ENV: "soon"}) == 0.0
    ran = []
    host = functions.FunctionHost(update_every=1)
    host.register("echo", 10, "Says it back.", lambda call: ran.append(call) or (200, "text/plain", "x"))
    out = Captured()
    dispatcher = functions.Dispatcher(host, out, delay=5)
    dispatcher.start(call_of('FUNCTION d1 10 "echo"'))
    dispatcher.cancel("d1")
    time.sleep(0.2)
    assert [r[:2] for r in out.results()] == [("d1", functions.CANCELLED)] and ran == []


class FakeJob:
    def __init__(self):
        self.cfg = {"update_every": 2}
        self.announce = ""
        self.observers = []

    def add_tick_observer(self, observe):
        self.observers.append(observe)


def provide_echo(host, job):
    host.register("echo", 5, "Says it back.", echo)


def test_attach_registers_what_its_providers_give_and_survives_a_broken_one(caplog):
    job = FakeJob()
    with open(os.devnull) as stdin:
        host = functions.attach(job, Captured(), stdin, [])
        assert host.functions == {} and job.announce == ""
        with caplog.at_level("ERROR", logger="netdrops"):
            host = functions.attach(job, Captured(), stdin, [
                provide_echo, "no_such_module_here:provide", "json:dumps_not_there",
                lambda host, job: 1 / 0])
    assert list(host.functions) == ["echo"]
    assert job.announce == 'FUNCTION GLOBAL "echo" 5 "Says it back."\n'
    logged = caplog.text
    assert "function provider no_such_module_here:provide not loaded: ModuleNotFoundError" in logged
    assert "function provider json:dumps_not_there not loaded: AttributeError" in logged
    assert "ZeroDivisionError" in logged


def test_the_advisor_provider_registers_its_function_and_observes_ticks():
    job = FakeJob()
    host = functions.FunctionHost(update_every=2)
    history = advisor_function.provide(host, job)
    assert job.observers == [history.observe]
    assert host.registration() == 'FUNCTION GLOBAL "{0}" {1} "{2}"\n'.format(
        advisor_function.NAME, advisor_function.TIMEOUT, advisor_function.HELP)
    head, body = host.answer(call_of('FUNCTION t 10 "netdrops-advisor"')).split("\n", 1)
    assert head.split()[2] == "503" and "two samples" in body  # no tick yet
    head, body = host.answer(call_of('FUNCTION t 10 "netdrops-advisor help"')).split("\n", 1)
    assert head.split()[2:4] == ["200", "text/plain"] and body.startswith(advisor_function.HELP)


# An installed distribution's entry points, as pip writes them.
ENTRY_POINTS = "[netdrops.functions]\n{0}\n\n[console_scripts]\nsomething = x:y\n"


def fake_distribution(tmp_path, name, lines):
    info = tmp_path / "{0}-1.0.dist-info".format(name)
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: {0}\nVersion: 1.0\n".format(name))
    (info / "entry_points.txt").write_text(ENTRY_POINTS.format(lines))


def env_seeing(tmp_path):
    """This environment, plus the distributions under tmp_path (the machine's install may lack them)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))


def installed_providers_with(tmp_path, *dists):
    """installed_providers() in a fresh interpreter that also sees these distributions
    [(dist name, entry point lines)]."""
    for name, lines in dists:
        fake_distribution(tmp_path, name, lines)
    done = subprocess.run([sys.executable, "-c", "import json; from netdrops_collector.frontends.functions import "
                           "installed_providers; print(json.dumps(installed_providers()))"],
                          capture_output=True, text=True, env=env_seeing(tmp_path), check=True)
    return json.loads(done.stdout)


def test_installed_providers_are_read_from_the_entry_point_group_each_once(tmp_path):
    found = installed_providers_with(
        tmp_path, ("netdrops_a", "netdrops-advisor = netdrops_advisor.function:provide\nzz-echo = echo_mod:provide"),
        ("netdrops_b", "netdrops-advisor = netdrops_advisor.function:provide"))
    assert "echo_mod:provide" in found and found.count("netdrops_advisor.function:provide") == 1
    assert found.index("netdrops_advisor.function:provide") < found.index("echo_mod:provide")  # by name


def test_netdrops_collector_plugin_offers_the_function_of_the_installed_entry_point(tmp_path):
    """The README's command for debugging by hand, with the entry point setup.cfg declares."""
    fake_distribution(tmp_path, "netdrops_test", "netdrops-advisor = netdrops_advisor.function:provide")
    proc = subprocess.Popen([sys.executable, "-m", "netdrops_collector", "plugin", "1"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_seeing(tmp_path),
                            cwd=str(tmp_path))
    try:
        out, deadline, asked = b"", time.monotonic() + 20, False
        while b"FUNCTION_RESULT_END" not in out and time.monotonic() < deadline and proc.poll() is None:
            if not asked and b'FUNCTION GLOBAL "netdrops-advisor"' in out:
                proc.stdin.write(b'FUNCTION t1 10 "netdrops-advisor help"\n')
                proc.stdin.flush()
                asked = True
            out += proc.stdout.read1(65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        err = proc.stderr.read().decode()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    text = out.decode()
    assert 'FUNCTION GLOBAL "netdrops-advisor" {0} "{1}"\n'.format(advisor_function.TIMEOUT, advisor_function.HELP) in text, err
    assert "FUNCTION_RESULT_BEGIN t1 200 text/plain " in text and advisor_function.HELP in text.split("t1 200", 1)[1]
    assert "no Netdata Function is installed" not in err and "Traceback" not in err


# -- a real Netdata 1.37 ------------------------------------------------------------------------

class StreamParent:
    """The parent end of Netdata 1.37's streaming connection, on loopback: accepts the child's
    `STREAM key=...` request, answers with protocol version 4 (labels, no compression, no
    replication), reads what the child sends, and sends FUNCTION commands the way a 1.37
    parent does when Netdata Cloud calls a child's Function."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.key = str(uuid.uuid4())
        self.conn = None
        self.received = b""
        self.lock = threading.Lock()
        self.closed = False

    def stream_conf(self):
        return {"stream": {"enabled": "yes", "destination": "tcp:127.0.0.1:{0}".format(self.port),
                           "api key": self.key, "enable compression": "no"}}

    def accept(self, timeout=60):
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.conn.recv(65536)
            assert chunk, "the child closed the connection during the handshake"
            request += chunk
        head, _, rest = request.partition(b"\r\n\r\n")
        assert head.startswith(b"STREAM key=" + self.key.encode())
        self.conn.sendall(b"Hit me baby, push them over with the version=4")
        self.received = rest
        self.conn.settimeout(0.5)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while not self.closed:
            try:
                chunk = self.conn.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.received += chunk

    def call(self, function, timeout=20):
        transaction = str(uuid.uuid4())
        self.conn.sendall('FUNCTION {0} {1} "{2}"\n'.format(transaction, timeout, function).encode())
        begin = '\nFUNCTION_RESULT_BEGIN "{0}"'.format(transaction).encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                data = self.received
            start = data.find(begin)
            end = data.find(b"\nFUNCTION_RESULT_END\n", start + 1)
            if start >= 0 and end > 0:
                head, body = data[start + 1:end].decode().split("\n", 1)
                words = shlex.split(head)  # FUNCTION_RESULT_BEGIN "tx" 200 "application/json" 0
                return int(words[2]), words[3], body
            time.sleep(0.1)
        raise AssertionError("no FUNCTION_RESULT for {0} from the child in {1} s".format(function, timeout))

    def close(self):
        self.closed = True
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()


def test_netdata_137_passes_a_call_to_the_plugin_and_the_answer_back(netdata_factory):
    parent = StreamParent()
    try:
        nd = netdata_factory("fn", stream_conf=parent.stream_conf())
        install_plugin(nd.root, nd.plugins_dir, nd.config_dir)
        nd.start()
        parent.accept()
        registered = nd.wait_for(lambda: nd.api("/api/v1/info").get("functions", {}).get(advisor_function.NAME), 60,
                                 what="netdrops-advisor in /api/v1/info functions")
        assert registered["help"] == advisor_function.HELP and registered["timeout"] == advisor_function.TIMEOUT
        assert "GLOBAL" in registered["options"]
        # 1.37 keeps Functions off its own HTTP API: Netdata Cloud (or a parent) calls them
        with pytest.raises(Exception) as refused:
            nd.api("/api/v1/function", {"function": advisor_function.NAME})
        assert getattr(refused.value, "code", None) == 403
        nd.wait_chart("netdrops_local.softnet_dropped")
        time.sleep(2)

        status, ctype, body = parent.call(advisor_function.NAME)
        assert (status, ctype) == (200, "application/json")
        doc = json.loads(body)
        check_table(doc)
        assert doc["report"]["node"] == nd.hostname  # computed inside Netdata's plugin (NETDATA_HOSTNAME)
        assert doc["update_every"] == 1
        # Netdata rewrites '=' to ':' on the way: window=10 arrives as window:10
        status, ctype, body = parent.call(advisor_function.NAME + " window=10 format=text")
        assert (status, ctype) == (200, "text/plain") and "backlog drops" in body
        # no complaint about our FUNCTION lines (1.37 logs malformed ones and unknown transactions)
        assert not [line for line in nd.log_text().splitlines() if "FUNCTION" in line]
    finally:
        parent.close()
