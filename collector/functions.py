"""The external plugin's Netdata Function `netdrops-advisor`: the advisor's findings and
recommendations, computed from the plugin's own samples of the last minute, as a table.

plugins.d protocol (read from Netdata's source, 1.37 and v2, and checked against a running
1.37.1 and v2.11.0-90 with a plugin that logged every byte it received):

    plugin -> Netdata   FUNCTION GLOBAL "netdrops-advisor" 10 "help text"
    Netdata -> plugin   (on stdin)
        1.37            FUNCTION <transaction> <timeout> "netdrops-advisor <params>"
        v2              FUNCTION <transaction> <timeout> "netdrops-advisor <params>" "0x<access>" "<source>"
        v2, POST body   FUNCTION_PAYLOAD <transaction> <timeout> "netdrops-advisor <params>" "0x<access>"
                            "<source>" "<content type>"
                        <body lines>
                        FUNCTION_PAYLOAD_END
        v2              FUNCTION_CANCEL <transaction>     (the HTTP client went away, or, sent with
                                                           the next call, the call timed out)
        v2              FUNCTION_PROGRESS <transaction>   (the caller is still waiting)
        v2              QUIT                              (no newline; then it closes our pipes)
    plugin -> Netdata   FUNCTION_RESULT_BEGIN <transaction> <status> <content type> <expires>
                        <body lines>
                        FUNCTION_RESULT_END

1.37 rewrites the call's text before it arrives (`=` and `;` become `:`, quotes `_`); v2.11
passes `window=30` as it is: parameters are read in both spellings. Netdata gives every plugin
a pipe on stdin for the plugin's whole life and closes it when it is done with the plugin.

The plugin's main loop only appends references to what each tick already produced (History);
each call runs on a thread of its own, so a call never delays a collection nor the reading of a
FUNCTION_CANCEL. Everything the collector measures comes from the plugin's ticks (softnet per
CPU, interface drops, drops by kind, socket counters, tuning, and the backlog length seen at
every tick); what it does not measure is read alongside, every ANCHOR_SECONDS: /proc/stat for
CPU busy time and UDP SndbufErrors. RX queues, RPS masks and the UDP sockets that dropped
(since they opened) are read when called, as the advisor does with a Netdata source.

The advisor package is imported only when called; an installation that did not copy it next to
the collector does not register the Function.
"""

import json
import logging
import os
import shlex
import signal
import socket
import stat
import threading
import time

from . import tuning
from .charts import CTX_IFACE_DROPS, CTX_IFACE_NIC_LOSS, CTX_IFACE_PACKETS, PRECISION

log = logging.getLogger("netdrops")

NAME = "netdrops-advisor"
TIMEOUT = 10            # seconds Netdata waits; the answer comes from memory in milliseconds
CANCELLED = 499         # the status Netdata v2 gives a cancelled call ("client closed request")
MAX_CALLS = 8           # calls running at once; more are answered 503 at once
PARAM_NAMES = ("window", "format")
# Keywords Netdata sends on our stdin (plugins.d's PLUGINSD_CALL_*).
CALL, PAYLOAD_BEGIN, PAYLOAD_END = "FUNCTION", "FUNCTION_PAYLOAD", "FUNCTION_PAYLOAD_END"
CANCEL, PROGRESS, QUIT = "FUNCTION_CANCEL", "FUNCTION_PROGRESS", "QUIT"
# Fault injection for tests only: when this variable is set (never by Netdata, never by the
# installer), every call waits that many seconds, cancellably, before it computes. It is how the
# tests make a call that is still running when Netdata cancels it.
FAULT_DELAY_ENV = "NETDROPS_FAULT_FUNCTION_DELAY"
WINDOW = 60             # seconds of samples examined by default
MAX_WINDOW = 300
ANCHOR_SECONDS = 10     # pace of the /proc/stat and SndbufErrors readings, and of kept samples
IFACE_CONTEXTS = (CTX_IFACE_DROPS, CTX_IFACE_NIC_LOSS, CTX_IFACE_PACKETS)
HELP = ("Receive-path packet drops: findings and recommended changes from the netdrops advisor, "
        "computed from the netdrops.plugin samples of the last minute. Parameters: window:SECONDS "
        "(10-300), format:text (the advisor text report), format:json (its JSON report), help.")


def registration():
    """The line that registers the Function (host-wide: GLOBAL, no chart needed)."""
    return 'FUNCTION GLOBAL "{0}" {1} "{2}"\n'.format(NAME, TIMEOUT, HELP)


def advisor_available():
    try:
        import netdrops_advisor.report  # noqa: F401
        return True
    except ImportError:
        return False


# -- what the main loop keeps -------------------------------------------------------------------

class Anchor:
    """A tick whose values start a window: its totals, and the readings taken with it."""
    __slots__ = ("mono", "wall", "values", "proc_stat", "sndbuf", "peaks")

    def __init__(self, mono, wall, values, proc_stat, sndbuf, peaks):
        self.mono = mono
        self.wall = wall
        self.values = values
        self.proc_stat = proc_stat
        self.sndbuf = sndbuf
        self.peaks = peaks      # {cpu: highest backlog length seen since the previous anchor}


class History:
    """The last MAX_WINDOW + ANCHOR_SECONDS of one job's ticks, cheap enough to keep every tick:
    observe() stores references to dicts the tick already built; an anchor every ANCHOR_SECONDS
    adds two small /proc reads."""

    def __init__(self, window=MAX_WINDOW, anchor_seconds=ANCHOR_SECONDS):
        self.keep = window + anchor_seconds
        self.anchor_seconds = anchor_seconds
        self.lock = threading.Lock()
        self.anchors = []
        self.latest = None          # (mono, wall, values) of the newest tick
        self.peaks = {}             # backlog peaks since the newest anchor
        self.iface_charts = {}      # chart id -> Chart, replaced whole on change
        self.collector = None
        self.failed = False

    def observe(self, collector, values, changes, mono, wall=None):
        """Called by the plugin's main loop after every tick of the job (no waiting inside).
        Never raises: the Function must not cost a collection."""
        try:
            self._observe(collector, values, changes, mono, time.time() if wall is None else wall)
        except Exception as error:
            if not self.failed:
                log.error("function %s: keeping samples failed: %s: %s", NAME, type(error).__name__, error)
            self.failed = True

    def _observe(self, collector, values, changes, mono, wall):
        peaks = _backlog_lengths(values, collector.tuning.get("netdev_max_backlog"))
        with self.lock:
            if collector is not self.collector:  # a new collector counts from 0 again
                self.collector = collector
                self.anchors, self.peaks, self.iface_charts = [], {}, {}
            if changes.created or changes.obsoleted:
                charts = dict(self.iface_charts)
                for chart in changes.created:
                    if chart.context in IFACE_CONTEXTS:
                        charts[chart.id] = chart
                for chart in changes.obsoleted:
                    charts.pop(chart.id, None)
                self.iface_charts = charts
            for cpu, length in peaks.items():
                if length > self.peaks.get(cpu, -1):
                    self.peaks[cpu] = length
            self.latest = (mono, wall, values)
            due = not self.anchors or mono - self.anchors[-1].mono >= self.anchor_seconds
        if due:
            anchor = Anchor(mono, wall, values, *read_extras(collector.hostfs), peaks=None)
            with self.lock:
                anchor.peaks, self.peaks = self.peaks, {}
                self.anchors.append(anchor)
                while len(self.anchors) > 1 and mono - self.anchors[1].mono >= self.keep:
                    del self.anchors[0]

    def window(self, seconds):
        """(start anchor, later anchors, latest tick, current peaks, iface charts, collector) for
        a window of about `seconds` ending at the newest tick; None before two ticks."""
        with self.lock:
            if self.latest is None or not self.anchors or self.latest[0] <= self.anchors[0].mono:
                return None
            end = self.latest[0]
            start = 0
            for i, anchor in enumerate(self.anchors):  # the newest anchor at least `seconds` old
                if end - anchor.mono >= seconds:
                    start = i
            return (self.anchors[start], list(self.anchors[start + 1:]), self.latest, dict(self.peaks),
                    list(self.iface_charts.values()), self.collector)


def _backlog_lengths(values, backlog_max):
    """{cpu: backlog length} from the fill percentages of one tick."""
    if not backlog_max:
        return {}
    prefix = "softnet_backlog_fill_cpu"
    return {int(k[len(prefix):]): round(v * backlog_max / (100 * PRECISION))
            for k, v in values.items() if k.startswith(prefix)}


def read_extras(hostfs):
    """(/proc/stat per CPU, UDP SndbufErrors): what the advisor reads that the collector does not
    chart. None for what cannot be read."""
    try:
        from netdrops_advisor import kernel_sampler, procstat
    except ImportError:
        return None, None
    try:
        proc_stat = procstat.read_proc_stat(hostfs)
    except OSError:
        proc_stat = None
    return proc_stat, kernel_sampler.read_udp_sndbuf_errors(hostfs)


# -- answering ---------------------------------------------------------------------------------

class CallError(Exception):
    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


class Call:
    """One call from Netdata: a FUNCTION line, or a FUNCTION_PAYLOAD block with its body."""
    __slots__ = ("transaction", "timeout", "name", "params", "payload", "content_type", "received")

    def __init__(self, transaction, timeout, name, params, payload=None, content_type=None, received=None):
        self.transaction = transaction
        self.timeout = timeout
        self.name = name
        self.params = params
        self.payload = payload            # the POST body (text), None for a GET
        self.content_type = content_type
        self.received = time.monotonic() if received is None else received

    @property
    def deadline(self):
        """When Netdata stops waiting: it has answered the caller itself (504) by then."""
        return self.received + self.timeout


def parse_call(line):
    """'FUNCTION <transaction> <timeout> "<name params>" [access source]' or the same after
    FUNCTION_PAYLOAD (+ content type) -> Call (without payload), or None if malformed."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 4 or words[0] not in (CALL, PAYLOAD_BEGIN):
        return None
    call = words[3].split()
    if not call:
        return None
    try:
        timeout = max(1, int(words[2]))
    except ValueError:
        timeout = TIMEOUT
    content_type = words[6] if words[0] == PAYLOAD_BEGIN and len(words) > 6 else None
    return Call(words[1], timeout, call[0], call[1:], content_type=content_type)


class CommandReader:
    """Netdata's lines on our stdin -> commands: ("call", Call), ("cancel", transaction),
    ("progress", transaction), ("quit", None), ("malformed", line); None while a POST body is
    being read and for lines that are not for us. Parsing only: no I/O, no clock but the Call's."""

    def __init__(self):
        self.pending = None      # the Call whose FUNCTION_PAYLOAD body is being read
        self.body = []

    def feed(self, line):
        if self.pending is not None:
            if line.rstrip("\r") != PAYLOAD_END:
                self.body.append(line)
                return None
            call, self.pending = self.pending, None
            call.payload, self.body = "\n".join(self.body), []
            return ("call", call)
        keyword = line.split(None, 1)[0] if line.strip() else ""
        if keyword in (CALL, PAYLOAD_BEGIN):
            call = parse_call(line)
            if call is None:
                return ("malformed", line)
            if keyword == PAYLOAD_BEGIN:
                self.pending = call
                return None
            return ("call", call)
        if keyword in (CANCEL, PROGRESS):
            words = line.split()
            if len(words) < 2:
                return ("malformed", line)
            return ("cancel" if keyword == CANCEL else "progress", words[1])
        if keyword == QUIT:
            return ("quit", None)
        return None


def payload_params(payload, content_type):
    """Our parameters from a POST body (v2's dashboard sends JSON: {"selections": {"window":
    ["60"]}, ...}; top-level keys are taken too) -> ["window:60", ...]; CallError(400)."""
    if not payload or not payload.strip():
        return []
    if content_type and "json" not in content_type:
        raise CallError(400, "the body must be JSON (it was {0})".format(content_type))
    try:
        doc = json.loads(payload)
    except ValueError as error:
        raise CallError(400, "the body is not JSON: {0}".format(error))
    if not isinstance(doc, dict):
        raise CallError(400, "the body must be a JSON object")
    selections = doc.get("selections")
    merged = dict(doc)
    if isinstance(selections, dict):
        merged.update(selections)
    params = []
    for key in PARAM_NAMES:
        value = merged.get(key)
        if value is None:
            continue
        if isinstance(value, list) and len(value) == 1:  # a selection: ["60"]
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise CallError(400, "{0} must be one value".format(key))
        params.append("{0}:{1}".format(key, value))
    return params


def parse_params(params):
    """-> (window seconds, format); CallError(400) on a bad value. `key:value` (1.37's rewrite)
    and `key=value` (v2) alike. Unknown words are ignored (dashboards add their own, such as
    `after:` or `before:`)."""
    window, fmt = WINDOW, "table"
    for param in params:
        key, _, value = param.replace("=", ":", 1).partition(":")
        if key == "window":
            try:
                window = int(value)
            except ValueError:
                window = 0
            if not 10 <= window <= MAX_WINDOW:
                raise CallError(400, "window must be a whole number of seconds from 10 to {0}".format(MAX_WINDOW))
        elif key == "format":
            if value not in ("table", "text", "json"):
                raise CallError(400, "format must be table, text or json")
            fmt = value
        elif key in ("help", "info") and fmt not in ("help", "info"):
            fmt = key
    return window, fmt


def result(transaction, status, content_type, body, expires):
    body = body if body.endswith("\n") else body + "\n"
    return "FUNCTION_RESULT_BEGIN {0} {1} {2} {3}\n{4}FUNCTION_RESULT_END\n".format(
        transaction, status, content_type, int(expires), body)


def error_body(status, message):
    # Netdata's own error shape: 1.37 wrote "error_message"; v2.11 writes "errorMessage" (seen in
    # its 504 answers) and its dashboard reads that. Both, for both.
    return json.dumps({"status": status, "errorMessage": message, "error_message": message})


def evidence_from_history(window_data, node, host=None, now_extras=None):
    """The advisor's Evidence from one window of the plugin's samples, plus what is read now:
    the settings, /proc/stat and SndbufErrors (unless given), host facts, RX queues and RPS
    masks, and the UDP sockets that dropped."""
    from netdrops_advisor import hostfacts, kernel_sampler
    from netdrops_advisor.evidence import TUNING_KEYS
    start, later, latest, peaks_now, iface_charts, collector = window_data
    end_mono, end_wall, values = latest
    base = start.values
    delta = {k: v - base.get(k, 0) for k, v in values.items()}
    peaks = dict(peaks_now)
    for anchor in later:
        for cpu, length in anchor.peaks.items():
            peaks[cpu] = max(peaks.get(cpu, 0), length)
    hostfs = collector.hostfs
    stat_after, sndbuf_after = now_extras if now_extras is not None else read_extras(hostfs)
    # the settings as they are now (the collector re-reads them only every tuning_every seconds)
    settings = dict(collector.tuning)
    settings.update(tuning.read_sysctls(hostfs))
    sample = kernel_sampler.KernelSample(
        seconds=end_mono - start.mono, start_time=int(start.wall), end_time=int(end_wall),
        values=delta, iface_charts=[c for c in iface_charts if c.context != CTX_IFACE_PACKETS],
        backlog_peak=peaks, tuning={k: settings.get(k) for k in TUNING_KEYS},
        cpu_ids_guessed=collector.cpu_ids_guessed,
        stat_before=start.proc_stat, stat_after=stat_after, netdev_before=None, netdev_after=None,
        sndbuf_before=start.sndbuf, sndbuf_after=sndbuf_after, udp_before=[], udp_after=[])
    evidence = kernel_sampler.evidence_from_sample(sample, node, host or hostfacts.read_host_facts(hostfs))
    evidence.source_detail = "netdrops.plugin's own samples of the last {0:.0f} s".format(sample.seconds)
    for chart in iface_charts:  # packets received, which the kernel path reads from /proc/net/dev
        iface = evidence.iface(chart.labels.get("device"))
        if chart.context == CTX_IFACE_PACKETS and iface is not None and iface.rx_packets is None:
            received = [d.id for d in chart.dims if d.name == "received"]
            if received and received[0] in delta:
                iface.rx_packets = float(delta[received[0]])
    hostfacts.enrich_interfaces(evidence, hostfs)
    evidence.udp_socket_drops = hostfacts.udp_sockets_now(hostfs)
    hostfacts.name_socket_owners(evidence, hostfs.path("proc"))
    return evidence


# Columns of the table, in order: (name, type, visible, sort, summary). The JSON layout is the
# one Netdata 1.37's own Function (apps.plugin `processes`) answers with, plus the fields of
# v2's table schema (src/plugins.d/FUNCTION_UI_REFERENCE.md: visualization, value_options,
# filter, full_width, wrap).
COLUMNS = (
    ("Row", "integer", False, "ascending", "count"),
    ("Type", "string", True, "ascending", "count"),
    ("Item", "string", True, "ascending", "count"),
    ("Summary", "string", True, "ascending", "count"),
    ("Where", "string", True, "ascending", "count"),
    ("Confidence", "string", True, "ascending", "count"),
    ("Now", "string", True, "ascending", "count"),
    ("Target", "string", True, "ascending", "count"),
    ("Command", "string", True, "ascending", "count"),
)


def _where(finding):
    parts = ["CPU {0}".format(c) if c >= 0 else "all CPUs" for c in finding["cpus"]]
    return ", ".join(parts + finding["interfaces"])


def table_rows(doc):
    """Rows from a report in the advisor's JSON schema (netdrops-advisor/1): problems and notes,
    the changes to make, and the success criteria with their numbers now."""
    rows = []
    for finding in doc["findings"]:
        rows.append([finding["severity"], finding["id"], finding["summary"], _where(finding),
                     finding["confidence"], "", "", ", ".join(finding["recommendations"])])
    for rec in doc["recommendations"]:
        rows.append(["change", rec["setting"], "{0} {1}".format(rec["reason"], rec["expected_effect"]).strip(),
                     rec["device"] or ("host" if rec["host_only"] else ""), "",
                     "" if rec["current"] is None else str(rec["current"]), rec["new"], rec["command"]])
    if not any(f["severity"] == "problem" for f in doc["findings"]):
        rows.append(["healthy", "no_drops", "No receive-path problem in the window: nothing to change.",
                     "", "", "", "", ""])
    for row in doc["success_criteria"]:
        now = "unknown" if row["now"] is None else "{0:g}{1}".format(row["now"], row["unit"])
        rows.append(["measure", row["metric"], "met" if row["met"] else "not met", "", "", now,
                     "< {0:g}{1}".format(row["target"], row["unit"]), ""])
    return [[i] + row for i, row in enumerate(rows, 1)]


# What v2's dashboard may send (accepted_params) and the selector it draws (required_params).
WINDOW_CHOICES = (60, 10, 30, 120, 300)


def parameters_schema():
    return {"accepted_params": ["info", "window", "format"],
            "required_params": [{
                "id": "window", "name": "Window", "type": "select",
                "help": "Seconds of the plugin's samples the advisor examines",
                "options": [dict({"id": str(w), "name": "last {0} s".format(w)},
                                 **({"defaultSelected": True} if w == WINDOW else {}))
                            for w in WINDOW_CHOICES]}]}


def info(update_every):
    """The answer to `netdrops-advisor info`, which v2's dashboard asks first: `v: 3` makes it
    send its data requests as POST with a JSON body."""
    return dict({"v": 3, "status": 200, "type": "table", "has_history": False, "help": HELP,
                 "update_every": update_every}, **parameters_schema())


def table(doc, update_every):
    columns = {}
    for index, (name, ctype, visible, sort, summary) in enumerate(COLUMNS):
        columns[name] = {"index": index, "unique_key": index == 0, "name": name, "visible": visible,
                         "type": ctype, "visualization": "value",
                         "value_options": {"transform": "number" if ctype == "integer" else "none",
                                           "decimal_points": 0, "default_value": None},
                         "sort": sort, "sortable": True, "sticky": index == 1, "summary": summary,
                         "filter": "multiselect", "full_width": name == "Summary", "wrap": name == "Summary"}
    return dict({"status": 200, "type": "table", "has_history": False, "update_every": update_every,
                 "help": HELP, "data": table_rows(doc), "columns": columns, "default_sort_column": "Row",
                 # the whole report, for scripts (schema netdrops-advisor/1, advisor/SCHEMA.md)
                 "report": doc}, **parameters_schema())


class AdvisorFunction:
    """Answers calls for one plugin job; thread-safe against that job's main loop."""

    def __init__(self, history, update_every, node=None):
        self.history = history
        self.update_every = update_every
        self.node = node or os.environ.get("NETDATA_HOSTNAME") or socket.gethostname()

    def answer(self, call):
        """One Call -> the FUNCTION_RESULT block to write."""
        expires = time.time() + self.update_every
        if call.name != NAME:
            return result(call.transaction, 404, "application/json",
                          error_body(404, "netdrops.plugin has no function {0!r}".format(call.name)), expires)
        try:
            status, content_type, body = self.call(call.params + payload_params(call.payload, call.content_type))
        except CallError as error:
            status, content_type, body = error.status, "application/json", error_body(error.status, str(error))
        except Exception as error:  # the advisor failed: one line in Netdata's log, and an answer
            log.error("function %s failed: %s: %s", NAME, type(error).__name__, error)
            status, content_type = 500, "application/json"
            body = error_body(500, "the advisor failed: {0}: {1}".format(type(error).__name__, error))
        return result(call.transaction, status, content_type, body, expires)

    def call(self, params):
        window, fmt = parse_params(params)
        if fmt == "help":
            return 200, "text/plain", HELP
        if fmt == "info":
            return 200, "application/json", json.dumps(info(self.update_every))
        if not advisor_available():
            raise CallError(503, "the netdrops advisor is not installed next to the collector "
                                 "(netdrops-collector install copies it)")
        from netdrops_advisor import render
        from netdrops_advisor.report import build_report
        data = self.history.window(window)
        if data is None:
            raise CallError(503, "netdrops.plugin has not collected two samples yet: try again in a few seconds")
        report = build_report(evidence_from_history(data, self.node))
        if fmt == "text":
            return 200, "text/plain", render.render_text(report)
        doc = render.report_to_dict(report)
        if fmt == "json":
            return 200, "application/json", json.dumps(doc)
        return 200, "application/json", json.dumps(table(doc, self.update_every))


# -- the plugin's stdin and stdout -------------------------------------------------------------

class LockedWriter:
    """The plugin's stdout, shared by the main loop and the Function threads: each write() is one
    complete piece of protocol, never interleaved with another."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            self.stream.write(text)

    def flush(self):
        with self.lock:
            self.stream.flush()

    def write_and_flush(self, text):
        with self.lock:
            self.stream.write(text)
            self.stream.flush()


class InFlight:
    """A call being computed: whoever answers first (the worker, or a cancel) writes the one
    answer Netdata gets for the transaction."""
    __slots__ = ("call", "cancelled", "answered")

    def __init__(self, call):
        self.call = call
        self.cancelled = threading.Event()
        self.answered = False


class Dispatcher:
    """Runs each call on its own thread and writes its answer once; answers a cancelled call at
    once with CANCELLED. Seen on v2.11: Netdata sends FUNCTION_CANCEL when the HTTP client goes
    away (the transaction is still waiting there for our answer, which frees it) and, for a call
    that timed out, when the next call arrives (it has answered 504 and forgotten the transaction:
    an answer then is logged as 'transaction is not found')."""

    def __init__(self, function, out, delay=0.0, max_calls=MAX_CALLS, clock=time.monotonic):
        self.function = function
        self.out = out
        self.delay = delay          # FAULT_DELAY_ENV, for tests only
        self.max_calls = max_calls
        self.clock = clock
        self.lock = threading.Lock()
        self.inflight = {}          # transaction -> InFlight

    def start(self, call):
        with self.lock:
            busy = len(self.inflight) >= self.max_calls
            duplicate = call.transaction in self.inflight
            if not busy and not duplicate:
                entry = self.inflight[call.transaction] = InFlight(call)
        if duplicate:
            return  # Netdata never sends one transaction twice; the first call answers it
        if busy:
            self.write(result(call.transaction, 503, "application/json", error_body(
                503, "netdrops.plugin is already answering {0} calls".format(self.max_calls)), time.time()))
            return
        threading.Thread(target=self._work, args=(entry,), name="netdrops-call", daemon=True).start()

    def _work(self, entry):
        answer = None
        try:
            if self.delay and entry.cancelled.wait(self.delay):
                return
            answer = self.function.answer(entry.call)
        finally:
            self._finish(entry, answer)

    def _finish(self, entry, answer):
        with self.lock:
            self.inflight.pop(entry.call.transaction, None)
            first, entry.answered = not entry.answered, True
        if not first or answer is None:
            return
        if self.clock() > entry.call.deadline:
            log.warning("function %s: a call took longer than Netdata waits (%d s): its answer is dropped",
                        NAME, entry.call.timeout)
            return
        self.write(answer)

    def cancel(self, transaction):
        with self.lock:
            entry = self.inflight.pop(transaction, None)
            if entry is None or entry.answered:
                return  # answered already, or not ours
            entry.answered = True
        entry.cancelled.set()
        if self.clock() <= entry.call.deadline:
            self.write(result(transaction, CANCELLED, "application/json",
                              error_body(CANCELLED, "the call was cancelled"), time.time()))

    def write(self, text):
        try:
            self.out.write_and_flush(text)
        except (BrokenPipeError, ValueError, OSError):
            pass  # stdout is gone: the main loop sees it too and exits


def stdin_is_netdatas(stdin, environ=None):
    """Netdata starts plugins with a pipe on stdin that it keeps open while it runs them; EOF
    there means Netdata is done with us. Run by hand (a terminal, /dev/null) EOF means nothing."""
    env = os.environ if environ is None else environ
    try:
        return stat.S_ISFIFO(os.fstat(stdin.fileno()).st_mode) and "NETDATA_PLUGINS_DIR" in env
    except (OSError, ValueError, AttributeError):
        return False


def read_lines(fd):
    """Lines from a file descriptor, read unbuffered: a daemon thread blocked inside sys.stdin's
    buffered reader would hold its lock and abort the interpreter at exit. v2 sends QUIT without
    a newline (seen on v2.11): a pending `QUIT` is a line of its own."""
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            if pending:
                yield pending.decode("utf-8", "replace")
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if pending == QUIT.encode():
            lines.append(pending)
            pending = b""
        for line in lines:
            yield line.decode("utf-8", "replace")


def serve_stdin(dispatcher, fd, on_quit, on_eof):
    """The reader thread: start every call, cancel what Netdata cancels; on_quit() at QUIT,
    on_eof() at the end of stdin."""
    reader = CommandReader()
    for line in read_lines(fd):
        command = reader.feed(line)
        if command is None:
            continue
        kind, value = command
        if kind == "call":
            dispatcher.start(value)
        elif kind == "cancel":
            dispatcher.cancel(value)
        elif kind == "quit":
            on_quit()
            return
        elif kind == "malformed":
            log.error("ignoring a malformed line on stdin: %.200s", line.strip())
        # "progress": the caller is still waiting; our calls take milliseconds, nothing to report
    on_eof()


def fault_delay(environ=None):
    """FAULT_DELAY_ENV in seconds, 0 when unset (always, outside the tests)."""
    value = (os.environ if environ is None else environ).get(FAULT_DELAY_ENV)
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        log.error("%s=%r is not a number of seconds: ignored", FAULT_DELAY_ENV, value)
        return 0.0


def attach(job, out, stdin):
    """Give a plugin job the Function: the job announces it with its first charts (unless the
    advisor is not installed) and a thread reads the calls arriving on stdin."""
    available = advisor_available()
    history = History()
    if available:
        job.on_tick = history.observe
    dispatcher = Dispatcher(AdvisorFunction(history, job.cfg["update_every"]), out, delay=fault_delay())
    netdata_stdin = stdin_is_netdatas(stdin)

    def exit_now():
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler exits 0

    def on_quit():
        log.info("Netdata sent QUIT: exiting")
        exit_now()

    def on_eof():
        if netdata_stdin:
            log.info("Netdata closed our stdin: exiting")
            exit_now()

    try:
        fd = stdin.fileno()
    except (AttributeError, ValueError, OSError):
        fd = None  # no stdin at all: nobody can call
    if fd is not None:
        threading.Thread(target=serve_stdin, args=(dispatcher, fd, on_quit, on_eof),
                         name="netdrops-functions", daemon=True).start()
    if available and fd is not None:
        job.announce = registration()
