"""The Netdata Function `netdrops-advisor` of the external plugin: the advisor's findings and
recommendations, computed from the plugin's own samples of the last minute, as a table.

The plugin's machinery (netdrops_collector.frontends.functions: calls on stdin, threads, cancel, answers)
runs it; this module is its provider, `provide(host, job)`, which the installed netdrops.plugin
launcher passes to the plugin when the advisor is installed beside the collector, and which
`netdrops-collector plugin` finds through the `netdrops.functions` entry point group. The
collector never imports the advisor.

The plugin's main loop keeps, after each tick, the core's snapshot of it (History); each call runs on a thread of its own, so a call never delays a collection nor the reading of a
FUNCTION_CANCEL. Everything the collector measures comes from the plugin's ticks (softnet per
CPU, interface drops, drops by kind, socket counters, tuning, and the backlog length seen at
every tick, all in its snapshots); what it does not measure is read alongside, every
ANCHOR_SECONDS: /proc/stat for CPU busy time. RX queues, RPS masks and the UDP sockets that dropped
(since they opened) are read when called, as the advisor does with a Netdata source.
"""

import json
import logging
import os
import socket
import threading
import time

from netdrops_collector.frontends import functions
from netdrops_collector import model
from netdrops_collector.kernel import tuning
from netdrops_collector.frontends.functions import CallError

from .sources import hostfacts, kernel_sampler, procstat
from . import render
from .report import build_report

log = logging.getLogger("netdrops")

NAME = "netdrops-advisor"
TIMEOUT = 10            # seconds Netdata waits; the answer comes from memory in milliseconds
PARAM_NAMES = ("window", "format")
WINDOW = 60             # seconds of samples examined by default
MAX_WINDOW = 300
ANCHOR_SECONDS = 10     # pace of the /proc/stat readings, and of kept snapshots
HELP = ("Receive-path packet drops: findings and recommended changes from the netdrops advisor, "
        "computed from the netdrops.plugin samples of the last minute. Parameters: window:SECONDS "
        "(10-300), format:text (the advisor text report), format:json (its JSON report), help.")


def provide(host, job):
    """The provider: register `netdrops-advisor` on the plugin's FunctionHost for one job, and
    keep that job's samples."""
    history = History()
    job.add_tick_observer(history.observe)
    host.register(NAME, TIMEOUT, HELP, AdvisorFunction(history, job.cfg["update_every"]).answer)
    return history


# -- what the main loop keeps -------------------------------------------------------------------

class Anchor:
    """A tick that starts a window: the core's snapshot, and the reading taken with it."""
    __slots__ = ("snapshot", "proc_stat", "peaks")

    def __init__(self, snapshot, proc_stat, peaks):
        self.snapshot = snapshot
        self.proc_stat = proc_stat
        self.peaks = peaks      # {cpu: highest backlog length seen since the previous anchor}


class History:
    """The last MAX_WINDOW + ANCHOR_SECONDS of one job's ticks: the newest tick's snapshot (the
    core's state, made after the tick, on the main loop, so a call on its own thread reads
    totals no tick is changing), the backlog length peaks, and an anchor every ANCHOR_SECONDS
    with one small /proc read."""

    def __init__(self, window=MAX_WINDOW, anchor_seconds=ANCHOR_SECONDS):
        self.keep = window + anchor_seconds
        self.anchor_seconds = anchor_seconds
        self.lock = threading.Lock()
        self.anchors = []
        self.latest = None          # the newest tick's model.Snapshot
        self.peaks = {}             # backlog length peaks since the newest anchor
        self.collector = None
        self.failed = False

    def observe(self, collector, values, changes, mono, wall=None):
        """Called by the plugin's main loop after every tick of the job (no waiting inside).
        Never raises: the Function must not cost a collection."""
        try:
            self._observe(collector, mono, time.time() if wall is None else wall)
        except Exception as error:
            if not self.failed:
                log.error("function %s: keeping samples failed: %s: %s", NAME, type(error).__name__, error)
            self.failed = True

    def _observe(self, collector, mono, wall):
        snap = collector.snapshot(mono, wall)
        with self.lock:
            if collector is not self.collector:  # a new collector counts from 0 again
                self.collector = collector
                self.anchors, self.peaks = [], {}
            for cpu in snap.cpus:
                if cpu.backlog_len is not None and cpu.backlog_len > self.peaks.get(cpu.cpu, -1):
                    self.peaks[cpu.cpu] = cpu.backlog_len
            self.latest = snap
            due = not self.anchors or mono - self.anchors[-1].snapshot.monotonic >= self.anchor_seconds
        if due:
            anchor = Anchor(snap, read_proc_stat(collector.hostfs), peaks=None)
            with self.lock:
                anchor.peaks, self.peaks = self.peaks, {}
                self.anchors.append(anchor)
                while len(self.anchors) > 1 and mono - self.anchors[1].snapshot.monotonic >= self.keep:
                    del self.anchors[0]

    def window(self, seconds):
        """(start anchor, later anchors, latest snapshot, current peaks, collector) for a window
        of about `seconds` ending at the newest tick; None before two ticks."""
        with self.lock:
            if self.latest is None or not self.anchors or self.latest.monotonic <= self.anchors[0].snapshot.monotonic:
                return None
            end = self.latest.monotonic
            start = 0
            for i, anchor in enumerate(self.anchors):  # the newest anchor at least `seconds` old
                if end - anchor.snapshot.monotonic >= seconds:
                    start = i
            return (self.anchors[start], list(self.anchors[start + 1:]), self.latest, dict(self.peaks),
                    self.collector)


def read_proc_stat(hostfs):
    """/proc/stat per CPU (for CPU busy time, which the collector does not read); None when unreadable."""
    try:
        return procstat.read_proc_stat(hostfs)
    except OSError:
        return None


def payload_params(payload, content_type):
    """Our parameters from a POST body -> ["window:60", ...]; CallError(400)."""
    return functions.payload_params(payload, content_type, PARAM_NAMES)


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


def evidence_from_history(window_data, node, host=None, now_stat=None):
    """The advisor's Evidence from one window of the plugin's samples (the difference of two of
    the core's snapshots, through the same builder as the kernel sampler), plus what is read now:
    the settings, /proc/stat (unless given), host facts, RX queues and RPS masks, and the UDP
    sockets that dropped."""
    start, later, latest, peaks_now, collector = window_data
    peaks = dict(peaks_now)
    for anchor in later:
        for cpu, length in anchor.peaks.items():
            peaks[cpu] = max(peaks.get(cpu, 0), length)
    window = model.delta(start.snapshot, latest, peaks)
    hostfs = collector.hostfs
    # the settings as they are now (the collector re-reads them only every tuning_every seconds)
    window.tuning.update(tuning.read_sysctls(hostfs))
    sample = kernel_sampler.KernelSample(
        window=window, stat_before=start.proc_stat,
        stat_after=now_stat if now_stat is not None else read_proc_stat(hostfs), udp_before=[], udp_after=[])
    evidence = kernel_sampler.evidence_from_sample(
        sample, node, host or hostfacts.read_host_facts(hostfs),
        source_detail="netdrops.plugin's own samples of the last {0:.0f} s".format(window.seconds))
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
        """The handler: one Call -> (status, content type, body); CallError."""
        params = call.params + payload_params(call.payload, call.content_type)
        try:
            return self.call(params)
        except CallError:
            raise
        except Exception as error:  # the advisor failed: one line in Netdata's log, and an answer
            log.error("function %s failed: %s: %s", NAME, type(error).__name__, error)
            raise CallError(500, "the advisor failed: {0}: {1}".format(type(error).__name__, error))

    def call(self, params):
        window, fmt = parse_params(params)
        if fmt == "help":
            return 200, "text/plain", HELP
        if fmt == "info":
            return 200, "application/json", json.dumps(info(self.update_every))
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
