"""Evidence straight from the kernel, for a machine without Netdata: the collector's core ticks
once a second over the window (the same counters, wrap handling and interface kinds the charts
use), while /proc/net/softnet_stat is also read 20 times a second for the backlog length, a
gauge that a once-a-second look almost always sees empty.

sample_kernel() does the I/O and returns a KernelSample: the window between the core's first and
last snapshots (model.delta, with the backlog peaks the fast look saw) and the readings the core
does not take; evidence_from_sample() turns one into Evidence without touching the machine.
"""

import collections
import os
import time

from netdrops_collector import config, model
from netdrops_collector.kernel import reasons, softnet
from netdrops_collector.core import Collector
from netdrops_collector.errors import ParseError

from . import procstat, udp_sockets
from ..errors import MissingEvidence
from ..diagnose.evidence import SOURCE_KERNEL, SocketDrop, from_window

TICK_SECONDS = 1.0
FAST_SECONDS = 0.05

# window: a model.Window; /proc/stat and the UDP socket table at both ends (None or [] where
# unreadable); reasons_note: why the window has no drop reasons (None when it has them)
KernelSample = collections.namedtuple("KernelSample", "window stat_before stat_after udp_before udp_after reasons_note")
KernelSample.__new__.__defaults__ = (None,)

# The core's Collector opens the drop-reason counters itself when it may (root): the window then
# carries the reasons, counted in the kernel over exactly the window.
REASONS_LIVE = "drop reasons counted live over the window (skb:kfree_skb, counted in the kernel)"


def why_no_reasons():
    """One sentence: why this process could not count drop reasons (the core logs it; the
    advisor says it in its report)."""
    try:
        reasons.reason_numbers()
    except reasons.ReasonsUnavailable as error:
        return "drop reasons are not counted: {0}".format(error)
    if os.geteuid() != 0:
        return ("drop reasons are not counted: the advisor counts them live only as root "
                "(perf_event_open needs root or CAP_PERFMON)")
    return "drop reasons are not counted: the counters could not be opened (see the collector's log line)"


def _optional(read, hostfs):
    try:
        return read(hostfs)
    except (OSError, ParseError):
        return None


def sample_kernel(seconds, hostfs=None, clock=time.monotonic, sleep=time.sleep):
    """Sample the kernel for `seconds`; raises MissingEvidence when /proc/net/softnet_stat
    cannot be read at all."""
    cfg = config.build({})
    try:
        collector = Collector(cfg, hostfs=hostfs)
    except (OSError, ParseError) as err:
        raise MissingEvidence("Could not read the kernel's receive-path counters ({0}).".format(err))
    hostfs = collector.hostfs
    reasons_note = None if collector.reasons is not None else why_no_reasons()
    backlog_peaks = {}

    def tick():
        collector.collect()
        collector.take_changes()

    def look_at_backlog():
        for row in softnet.read_softnet(hostfs):
            if row.backlog_len is not None:
                backlog_peaks[row.cpu] = max(backlog_peaks.get(row.cpu, 0), row.backlog_len)

    try:
        stat_before = _optional(procstat.read_proc_stat, hostfs)
        udp_before = udp_sockets.read_udp_sockets(hostfs)
        start = clock()
        tick()  # the baseline: totals count from here
        first = collector.snapshot(start, time.time())
        next_tick = start + TICK_SECONDS
        end = start + seconds
        while True:
            now = clock()
            if now >= end:
                break
            if now >= next_tick:
                tick()
                next_tick += TICK_SECONDS
            look_at_backlog()
            sleep(max(0.0, min(FAST_SECONDS, end - clock())))
        tick()
        last = collector.snapshot(clock())
    except (OSError, ParseError) as err:
        raise MissingEvidence("Reading the kernel's receive-path counters failed ({0}).".format(err))
    finally:
        collector.close()
    return KernelSample(window=model.delta(first, last, backlog_peaks),
                        stat_before=stat_before, stat_after=_optional(procstat.read_proc_stat, hostfs),
                        udp_before=udp_before, udp_after=udp_sockets.read_udp_sockets(hostfs),
                        reasons_note=reasons_note)


def evidence_from_sample(sample, node, host, source_detail=None):
    """KernelSample -> Evidence (pure)."""
    window = sample.window
    if not window.cpus:
        raise MissingEvidence("/proc/net/softnet_stat listed no CPUs.")
    util = {}
    if sample.stat_before and sample.stat_after:
        nice = procstat.nice_share(sample.stat_before, sample.stat_after)
        util = {cpu: (busy, softirq, nice.get(cpu))
                for cpu, (busy, softirq) in procstat.utilisation(sample.stat_before, sample.stat_after).items()}
    notes = []
    if window.cpu_ids_guessed:
        notes.append("/proc/net/softnet_stat has no CPU id column and a CPU is offline: CPU numbers "
                     "are row numbers.")
    socket_drops = [SocketDrop(s.proto, s.address, s.port, drops, "window", s.rx_queue, s.inode)
                    for s, drops in udp_sockets.drops_between(sample.udp_before, sample.udp_after)]
    counted = window.reasons is not None
    if not counted and sample.reasons_note:
        notes.append(sample.reasons_note)
    detail = source_detail or "sampled the kernel directly for {0:.0f} s".format(window.seconds)
    if counted and source_detail is None:
        detail += ", " + REASONS_LIVE
    return from_window(
        window, node, SOURCE_KERNEL, detail,
        utilisation=util, udp_socket_drops=socket_drops, tuning_source="kernel", host=host, notes=notes,
        reasons_source="kernel" if counted else None,
        reasons_note=None if counted else sample.reasons_note)
