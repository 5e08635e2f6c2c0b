"""The collector core: one tick reads the kernel and returns every dimension's value.

Front-ends (the python.d module, the external plugin, the advisor's kernel sampler) call
`collect()` once per tick, then `take_changes()` for charts to create or mark obsolete.
"""

import logging
import time

from . import charts
from .kernel import reasons, snmp, softnet, tuning
from .charts import PRECISION
from .kernel.counters import WRAP64, MonotonicCounter
from .config import matches
from .kernel.hostfs import HostFS
from .kernel.links import KINDS
from .model import CpuSnapshot, IfaceSnapshot, Snapshot
from .kernel.sources import open_source

log = logging.getLogger("netdrops")

ZERO_STATS = (0, 0, 0, 0, 0, 0)
KIND_DIM_IDS = {kind: "drops_by_kind_" + kind for kind in KINDS}
_REASONS_UNAVAILABLE_SAID = set()  # why reasons are not counted, as already logged by this process


def counter_delta(new, old):
    """Delta of a 64-bit interface counter; a smaller value means the counter was reset."""
    return new - old if new >= old else new


class Changes:
    __slots__ = ("created", "dims_added", "obsoleted")

    def __init__(self):
        self.created = []      # Chart objects to announce (with their dims)
        self.dims_added = []   # (Chart, Dim) for charts already announced
        self.obsoleted = []    # Chart objects to mark obsolete

    def __bool__(self):
        return bool(self.created or self.dims_added or self.obsoleted)


class CpuCounters:
    __slots__ = ("processed", "dropped", "squeeze", "rps", "flow_limit", "backlog_len", "has_rps",
                 "has_flow_limit", "dropped_id", "squeeze_id", "processed_id", "flow_limit_id", "backlog_fill_id")

    def __init__(self, row):
        self.processed = MonotonicCounter(row.processed)
        self.dropped = MonotonicCounter(row.dropped)
        self.squeeze = MonotonicCounter(row.time_squeeze)
        self.rps = MonotonicCounter(row.received_rps or 0)
        self.flow_limit = MonotonicCounter(row.flow_limit_count or 0)
        self.backlog_len = row.backlog_len  # the gauge as last read (None before 5.10)
        # Columns this kernel prints (the file's layout does not change while it runs).
        self.has_rps = row.received_rps is not None
        self.has_flow_limit = row.flow_limit_count is not None
        # Dimension ids, made once: this CPU's values are set every tick.
        name = charts.cpu_dim_name(row.cpu)
        self.dropped_id = "softnet_dropped_" + name
        self.squeeze_id = "softnet_squeeze_" + name
        self.processed_id = "softnet_processed_" + name
        self.flow_limit_id = "softnet_flow_limit_" + name
        self.backlog_fill_id = "softnet_backlog_fill_" + name


class IfaceCharts:
    """An interface with charts of its own: its charts and its running totals."""
    __slots__ = ("link", "charts", "inbound", "outbound", "missed", "fifo", "received", "ratio")

    def __init__(self, link, chart_list):
        self.link = link
        self.charts = chart_list
        self.inbound = self.outbound = self.missed = self.fifo = self.received = 0
        self.ratio = 0


class Collector:
    def __init__(self, cfg, hostfs=None, source=None):
        self.cfg = cfg
        self.hostfs = hostfs or HostFS.from_env(cfg.get("host_prefix"))
        self.source = source or open_source(cfg["interface_source"], self.hostfs)
        self.host_charts = {c.id: c for c in charts.host_charts()}
        self.changes = Changes()
        self.changes.created.extend(self.host_charts.values())
        self.announced = False
        self.values = {}
        self.cpus = {}
        self.softnet_totals = {"dropped": 0, "squeeze": 0, "rps": 0}
        self.cpu_ids_guessed = False
        self.kind_totals = dict.fromkeys(KINDS, 0)
        self.socket_counters = {}  # key -> (dimension id, MonotonicCounter)
        self.sockets_missing = False
        self.interfaces_seen = False
        self.ifaces = {}
        self.tuning = {}
        self.rps_interfaces = None
        self.tuning_values = {}  # dimension id -> value, as of the last tuning read
        self.ticks = 0
        self.next_priority = charts.PRIORITY_BASE + 100
        self.reasons = None         # reasons.ReasonCounters, when drop reasons can be counted
        self.reason_totals = None   # {dimension name: drops}, as of the last read
        self.reason_dim_ids = {}    # dimension name -> id, for the dimensions made so far
        self._open_reasons()

    def close(self):
        self.source.close()
        self.hostfs.close()
        if self.reasons is not None:
            self.reasons.close()

    # -- public --------------------------------------------------------------------------

    def collect(self):
        """Read everything once; returns {dimension id: int}."""
        values = {}
        if self.ticks % max(1, self.cfg["tuning_every"] // self.cfg["update_every"]) == 0:
            self._read_tuning()
        self._collect_softnet(values)
        self._collect_interfaces(values)
        self._collect_sockets(values)
        self._put_tuning(values)
        if self.reasons is not None:
            self._collect_reasons(values)
        self.ticks += 1
        self.values = values
        return values

    def snapshot(self, monotonic=None, wall=None):
        """The state after the last collect() as a model.Snapshot (running totals). Built on
        demand, never by collect(): the tick does not pay for it. `monotonic` and `wall` say
        when that tick ran (now, when not given)."""
        cpus = [CpuSnapshot(cpu_id, c.processed.total, c.dropped.total, c.squeeze.total,
                            c.rps.total if c.has_rps else None,
                            c.flow_limit.total if c.has_flow_limit else None, c.backlog_len)
                for cpu_id, c in sorted(self.cpus.items())]
        interfaces = []
        for key, state in self.ifaces.items():
            labels = state.charts[0].labels  # what the charts say about it, made once
            interfaces.append(IfaceSnapshot(
                key, state.link.name, state.link.kind, state.link.role, labels.get("peer"),
                labels.get("container"), labels.get("master"), state.received, state.inbound,
                state.outbound, state.missed, state.fifo))
        return Snapshot(
            time.monotonic() if monotonic is None else monotonic, time.time() if wall is None else wall,
            cpus, interfaces, dict(self.kind_totals),
            {key: counter.total for key, (_dim_id, counter) in self.socket_counters.items()},
            dict(self.tuning), self.rps_interfaces, self.cpu_ids_guessed, self.sockets_missing,
            dict(self.reason_totals) if self.reason_totals is not None else None)

    def take_changes(self):
        changes, self.changes = self.changes, Changes()
        self.announced = True
        if changes.obsoleted:
            self._settle_churn(changes)
        return changes

    def _settle_churn(self, changes):
        """An interface deleted and made again under its name since the last call (a container
        restarting: same veth name, new ifindex) has its chart ids both obsoleted and created:
        they stay alive. One created and gone again was never announced: neither is needed."""
        live = {chart.id: chart for state in self.ifaces.values() for chart in state.charts}
        never_announced = {id(c) for c in changes.created if c.id not in self.host_charts and live.get(c.id) is not c}
        changes.created = [c for c in changes.created if id(c) not in never_announced]
        changes.obsoleted = [c for c in changes.obsoleted if c.id not in live and id(c) not in never_announced]

    # -- softnet -------------------------------------------------------------------------

    def _collect_softnet(self, values):
        rows = softnet.read_softnet(self.hostfs)
        if not self.cpu_ids_guessed and softnet.row_ids_are_guesses(rows, self.hostfs):
            self.cpu_ids_guessed = True
            log.warning("%s has no CPU id column and a CPU is offline: per-CPU dimensions are "
                        "numbered by row, not by CPU id", self.hostfs.path(softnet.SOFTNET_PATH))
        backlog_max = self.tuning.get("netdev_max_backlog") or 0
        totals = self.softnet_totals
        for row in rows:
            cpu = self.cpus.get(row.cpu)
            if cpu is None:
                cpu = self.cpus[row.cpu] = CpuCounters(row)
                self._add_cpu_dims(row.cpu, row)
            else:
                totals["dropped"] += cpu.dropped.update(row.dropped)
                totals["squeeze"] += cpu.squeeze.update(row.time_squeeze)
                cpu.processed.update(row.processed)
                if row.received_rps is not None:
                    totals["rps"] += cpu.rps.update(row.received_rps)
                if row.flow_limit_count is not None:
                    cpu.flow_limit.update(row.flow_limit_count)
            cpu.backlog_len = row.backlog_len
            values[cpu.dropped_id] = cpu.dropped.total
            values[cpu.squeeze_id] = cpu.squeeze.total
            values[cpu.processed_id] = cpu.processed.total
            if row.flow_limit_count is not None:
                values[cpu.flow_limit_id] = cpu.flow_limit.total
            if row.backlog_len is not None and backlog_max > 0:
                values[cpu.backlog_fill_id] = row.backlog_len * 100 * PRECISION // backlog_max
        values["softnet_dropped_total"] = totals["dropped"]
        values["softnet_squeeze_total"] = totals["squeeze"]
        values["softnet_processed_rps_ipis"] = totals["rps"]

    def _add_cpu_dims(self, cpu, row):
        name = charts.cpu_dim_name(cpu)
        for chart_id, (algorithm, divisor) in charts.CPU_DIM_CHARTS.items():
            if chart_id == "softnet_backlog_fill" and row.backlog_len is None:
                continue  # kernels before 5.10 do not print the backlog length
            if chart_id == "softnet_flow_limit" and row.flow_limit_count is None:
                continue  # nor, before 3.11, the flow limit count
            chart = self.host_charts[chart_id]
            dim = chart.add_dim(name, algorithm=algorithm, divisor=divisor)
            if self.announced:
                self.changes.dims_added.append((chart, dim))

    # -- interfaces ----------------------------------------------------------------------

    def _collect_interfaces(self, values):
        source = self.source
        changed, vanished = source.read_changes()
        first = not self.interfaces_seen
        self.interfaces_seen = True
        ifaces = self.ifaces
        for key in vanished:  # first: their chart slots go to interfaces that appeared
            state = ifaces.pop(key, None)
            if state is not None:
                self.changes.obsoleted.extend(state.charts)
        for link in source.take_added():
            if self._wants_chart_by_config(link):
                self._chart_iface(link.ifindex, link)
        for state in ifaces.values():
            state.ratio = 0  # an interface that counted nothing this tick dropped 0 %

        if first:
            changed = []  # baseline: drops before the collector started are not ours
        elif changed:
            source.resolve([key for key, _old, _cur in changed])
        kind_totals = self.kind_totals
        for key, old, cur in changed:
            if old is None:
                old = ZERO_STATS  # appeared since the last tick: all it counted is new
            missed = counter_delta(cur[5], old[5])
            d_in = counter_delta(cur[2], old[2]) + missed
            d_out = counter_delta(cur[3], old[3])
            link = source.link(key)
            if d_in:
                kind_totals[link.kind if link else "other"] += d_in
            state = ifaces.get(key)
            if state is None and (d_in or d_out) and link is not None:
                state = self._chart_iface(key, link)
            if state is not None:
                state.inbound += d_in
                state.outbound += d_out
                state.missed += missed
                state.fifo += counter_delta(cur[4], old[4])
                received = counter_delta(cur[0], old[0])
                state.received += received
                arrived = received + d_in
                state.ratio = d_in * 100 * PRECISION // arrived if arrived else 0

        for state in ifaces.values():
            self._put_iface(values, state)
        for kind, total in kind_totals.items():
            values[KIND_DIM_IDS[kind]] = total

    def _wants_chart_by_config(self, link):
        if matches(link.name, self.cfg["exclude_interfaces"]):
            return False
        return (link.kind in self.cfg["chart_kinds"] or link.role in self.cfg["chart_kinds"]
                or matches(link.name, self.cfg["chart_interfaces"]))

    def _chart_iface(self, key, link):
        if key in self.ifaces:
            return self.ifaces[key]
        if matches(link.name, self.cfg["exclude_interfaces"]):
            return None
        if len(self.ifaces) >= self.cfg["max_interface_charts"]:
            return None
        chart_list = charts.iface_charts(link, self.source.peer_name(link), self.source.master_name(link),
                                         self.next_priority)
        self.next_priority += charts.IFACE_PRIORITY_STEP
        state = self.ifaces[key] = IfaceCharts(link, chart_list)
        self.changes.created.extend(chart_list)
        return state

    @staticmethod
    def _put_iface(values, state):
        for chart in state.charts:
            for dim in chart.dims:
                values[dim.id] = getattr(state, dim.source)

    # -- sockets and tuning --------------------------------------------------------------

    def _collect_sockets(self, values):
        """Socket drops: only this chart goes without values while /proc/net/snmp is missing,
        which is said once, and once more when it is back."""
        try:
            raw = snmp.read_socket_drops(self.hostfs)
        except FileNotFoundError as error:
            if not self.sockets_missing:
                log.warning("%s is missing: no socket drops until it is back", error.filename)
                self.sockets_missing = True
            return
        if self.sockets_missing:
            log.info("%s is back: socket drops again", self.hostfs.path(snmp.SNMP_PATH))
            self.sockets_missing = False
        counters = self.socket_counters
        for key, value in raw.items():
            counter = counters.get(key)
            if counter is None:  # first tick, or a file that was missing is back
                counters[key] = ("socket_drops_" + key, MonotonicCounter(value, WRAP64))
            else:
                counter[1].update(value)
        for key, (dim_id, counter) in counters.items():
            if key in raw:
                values[dim_id] = counter.total

    def _read_tuning(self):
        self.tuning = tuning.read_sysctls(self.hostfs)
        for state in self.ifaces.values():
            try:
                state.link.rps_on = tuning.rps_enabled(tuning.read_rx_queues(self.hostfs, state.link.name))
            except OSError:
                pass
        # Counted here, at the tuning pace, not every tick: it walks every known interface.
        self.rps_interfaces = sum(1 for link in self.source.all_links() if link.rps_on)
        values = {"tuning_" + key: self.tuning.get(key) for key in tuning.CHARTED_KEYS}
        values["tuning_rps_interfaces"] = self.rps_interfaces
        self.tuning_values = {k: v for k, v in values.items() if v is not None}

    def _put_tuning(self, values):
        values.update(self.tuning_values)

    # -- drop reasons --------------------------------------------------------------------

    def _open_reasons(self):
        if self.cfg["drop_reasons"] == "off":
            return
        try:
            self.reasons = reasons.open_counters(self.cfg["drop_reasons_socket"])
        except reasons.ReasonsUnavailable as error:
            # Once per process: a job that fails and is retried makes a collector each time.
            if str(error) not in _REASONS_UNAVAILABLE_SAID:
                _REASONS_UNAVAILABLE_SAID.add(str(error))
                log.info("drop reasons are not charted: %s", error)
            return
        chart = charts.reasons_chart()
        self.host_charts[chart.id] = chart
        self.changes.created.append(chart)
        self.reason_dim_ids = {dim.name: dim.id for dim in chart.dims}
        log.debug("drop reasons: counting %d reasons one by one on %d CPUs (%d descriptors, from %s)",
                 len(self.reasons.names), len(self.reasons.groups), self.reasons.fds, self.reasons.origin)

    def _collect_reasons(self, values):
        try:
            totals = self.reasons.read()
        except OSError as error:
            log.warning("drop reasons: reading the counters failed (%s); no more drop reasons",
                        error.strerror or error)
            self.reasons.close()
            self.reasons = None
            return
        self.reason_totals = totals
        dim_ids = self.reason_dim_ids
        for name, total in totals.items():
            dim_id = dim_ids.get(name)
            if dim_id is None:
                if not total:
                    continue  # a reason's dimension appears when it first counts
                chart = self.host_charts["drop_reasons"]
                dim = chart.add_dim(name)
                dim_ids[name] = dim.id
                if self.announced:
                    self.changes.dims_added.append((chart, dim))
                # Netdata takes an incremental dimension's first value as its base: 0 now and
                # the total from the next tick shows these drops one tick late, not never.
                values[dim.id] = 0
                continue
            values[dim_id] = total
