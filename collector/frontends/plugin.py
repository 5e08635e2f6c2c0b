"""netdrops.plugin: the standalone external plugin (Netdata v2 and anything without python.d).

Netdata starts it as `netdrops.plugin <update_every>` and reads the plugins.d protocol from its
stdout. It exits 0 when Netdata closes the pipe, sends QUIT or SIGTERM, and logs to stderr
(Netdata's error.log; collector.log on v2). It registers the Netdata Functions of the providers
main() is given (functions.py), whose calls arrive on stdin.
"""

import logging
import os
import signal
import sys
import time

from .. import config as nd_config
from .. import charts
from . import functions, protocol
from ..core import Collector
from ..jobs import load_jobs

log = logging.getLogger("netdrops")

# A job whose collection fails is retried at this slower pace, never in a busy loop.
RETRY_SECONDS = 10
# Netdata v2 ends a plugin that writes nothing for 120 s (QUIT, then SIGKILL; disabled after 10
# such runs): read from its pluginsd_process() and pluginsd_worker_thread(). Whatever the jobs do
# (a job failing for hours, an update_every of 300), the plugin writes at least this often; when
# nothing else was written, an empty line, the keep-alive Netdata's own plugins send (its
# send_newline_and_flush()). Seen taken without a log line by v2.11 and by 1.37.1.
KEEPALIVE_SECONDS = 5
KEEPALIVE = "\n"
# A failure that goes on is logged once, then again only this often: plugins' stderr is Netdata's
# error.log, with no flood protection, and a file missing for a day is not 8,640 lines.
REMIND_SECONDS = 3600


class Job:
    def __init__(self, name, cfg):
        self.name = name
        self.cfg = cfg
        self.type_id = "netdrops_" + charts.sanitize(name)
        self.collector = None
        self.known = {}  # chart id -> Chart, for SET lines and obsolete announcements
        self.next_run = 0.0
        self.last_run = None
        self.tick_observers = []  # each called with (collector, values, changes, now) after each tick
        self.announce = ""   # protocol text sent once, after the first charts (FUNCTION)
        self.failure = None         # the message of the failure going on, if any
        self.failing_since = None
        self.failure_logged = None  # when it was last logged

    def failed(self, error, now):
        """Drop the collector (the retry starts afresh, counters from a new baseline) and retry in
        RETRY_SECONDS. Logged when it starts, when the reason changes, and every REMIND_SECONDS."""
        message = str(error) or type(error).__name__
        if message != self.failure or now - self.failure_logged >= REMIND_SECONDS:
            log.error("job %s: collection failed: %s; retrying every %ss", self.name, message, RETRY_SECONDS)
            self.failure_logged = now
        if self.failure is None:
            self.failing_since = now
        self.failure = message
        self.stop()
        self.next_run = now + RETRY_SECONDS

    def recovered(self, now):
        if self.failure is not None:
            log.info("job %s: collecting again after %.0f s of failures", self.name, now - self.failing_since)
            self.failure = None

    def add_tick_observer(self, observe):
        """observe(collector, values, changes, now) after every tick, on the main loop: it must
        not wait, nor raise (an exception counts as the tick's failure)."""
        self.tick_observers.append(observe)

    def stop(self):
        """Close the collector now (its netlink socket) rather than whenever it is collected."""
        collector, self.collector = self.collector, None
        self.known.clear()
        self.last_run = None
        if collector is not None:
            try:
                collector.close()
            except OSError:
                pass

    def start(self):
        self.collector = Collector(self.cfg)

    def tick(self, now):
        """One collection; returns the protocol text to write."""
        if self.collector is None:
            self.start()
        values = self.collector.collect()
        changes = self.collector.take_changes()
        if self.tick_observers:
            for observe in self.tick_observers:
                observe(self.collector, values, changes, now)
        every = self.cfg["update_every"]
        out = []
        for chart in changes.created:
            self.known[chart.id] = chart
            out.append(protocol.chart_definition(self.type_id, chart, every))
        for chart, dim in changes.dims_added:
            out.append(protocol.chart_line(self.type_id, chart, every) + protocol.dimension_line(dim))
        for chart in changes.obsoleted:
            self.known.pop(chart.id, None)
            out.append(protocol.obsolete_chart(self.type_id, chart, every))
        if self.announce:
            out.append(self.announce)
            self.announce = ""
        since = int((now - self.last_run) * 1e6) if self.last_run else 0
        self.last_run = now
        for chart in self.known.values():
            out.append(protocol.chart_values(self.type_id, chart, values, since))
        return "".join(out)


def run(jobs, out=None, clock=time.monotonic, sleep=time.sleep, max_ticks=None):
    """The main loop: each job on its own schedule, aligned to its update_every, and a
    keep-alive whenever KEEPALIVE_SECONDS pass without output."""
    out = out or sys.stdout
    ticks = 0
    last_output = clock()
    while jobs and (max_ticks is None or ticks < max_ticks):
        now = clock()
        due = [j for j in jobs if j.next_run <= now]
        wrote = False
        for job in due:
            every = job.cfg["update_every"]
            try:
                text = job.tick(now)
            except Exception as error:  # one log line; retry this job later, keep the others
                job.failed(error, now)
                continue
            job.recovered(now)
            job.next_run = (now // every + 1) * every
            if text:
                out.write(text)
                wrote = True
        if not wrote and now - last_output >= KEEPALIVE_SECONDS:
            out.write(KEEPALIVE)
            wrote = True
        if wrote:
            last_output = now
        out.flush()
        ticks += 1
        wake = min(min(j.next_run for j in jobs), last_output + KEEPALIVE_SECONDS)
        delay = wake - clock()
        if delay > 0:
            sleep(delay)
    return 0


def exit_at_once(*_signal):
    """SIGTERM: exit 0 now, without the interpreter's clean-up. Systemd stops v2's netdata.service
    (no KillMode: the whole control group) with SIGTERM to the agent, its spawn server and its
    plugins at once. Seen on v2.11: a plugin that exits within a few milliseconds is reaped by the
    agent as a clean exit; one that takes the tens of milliseconds of Python's shutdown is
    signalled again by the exiting spawn server meanwhile, dies of SIGTERM and the agent logs it
    as 'exited abnormally. Disabling it.'. There is nothing to flush: the output is Netdata's,
    which is stopping, and the kernel closes the netlink socket."""
    os._exit(0)


def main(argv=None, providers=()):
    """providers: the Netdata Functions to offer, each a callable provide(host, job) or its
    'module:callable' spec (functions.attach); none by default."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="netdrops.plugin: %(levelname)s: %(message)s")
    update_every = None
    if argv:
        try:
            update_every = int(argv[0])
        except ValueError:
            log.error("usage: netdrops.plugin [update_every]")
            print("DISABLE", flush=True)
            return 1
    try:
        job_cfgs = load_jobs(update_every)
    except (nd_config.ConfigError, OSError, ValueError) as error:
        log.error("configuration: %s", error)
        print("DISABLE", flush=True)
        return 1
    jobs = [Job(name, cfg) for name, cfg in job_cfgs]
    signal.signal(signal.SIGTERM, exit_at_once)
    out = functions.LockedWriter(sys.stdout)
    try:
        functions.attach(jobs[0], out, sys.stdin, providers)
        return run(jobs, out)
    except BrokenPipeError:
        # Netdata closed our stdout: it is stopping or restarting the plugin.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 0
