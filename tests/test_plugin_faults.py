"""The external plugin when the world around it misbehaves (issue 7): a reader that stops
reading, a /proc file that goes missing or was never there, a read-only host prefix or
installation, and a missing file under a real Netdata 1.37. Each must end in a clean exit or a
clean retry, never a busy loop.

The plugin is the installed netdrops.plugin, run as Netdata runs it. Its CPU time is utime +
stime of all its threads from /proc/PID/stat. A busy loop burns up to one CPU-second per
second (a third of that measured here under other engineers' load); a blocked plugin may use
MAX_IDLE_CPU over a whole stall, a failing one that plus what its own start cost per retry.
"""

import fcntl
import os
import select
import shlex
import signal
import subprocess
import threading
import time

import pytest

from netdrops_collector import charts
from netdrops_collector.frontends.plugin import KEEPALIVE, KEEPALIVE_SECONDS, RETRY_SECONDS, Job, run
from netdatad import session_pids
from protocol_check import parse

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
F_SETPIPE_SZ = 1031           # fcntl.F_SETPIPE_SZ, spelled out for Pythons before 3.10
MAX_IDLE_CPU = 0.5            # CPU-seconds a waiting plugin may use over a whole stall or failure
RECOVERY_MARGIN = 10          # seconds past a retry for a loaded machine (or a host with 10,000 veths)
STALL_SECONDS = 20
SOFTNET = "proc/net/softnet_stat"
SNMP = "proc/net/snmp"
TICK_CHART = "netdrops_local.softnet_processed"   # a chart updated at every tick
SOCKET_CHART = "netdrops_local.socket_drops"
DROPPED_CHART = "netdrops_local.softnet_dropped"
FAILURE_LINE = "collection failed"


# -- the plugin, installed and running ---------------------------------------------------------

def install_plugin(root):
    """`netdrops-collector install --mode plugin` into root; -> (plugin path, config dir)."""
    dirs = {k: os.path.join(root, k) for k in ("plugins", "pythond", "config", "lib")}
    subprocess.run(["netdrops-collector", "install", "--mode", "plugin", "--no-health",
                    "--plugins-dir", dirs["plugins"], "--pythond-dir", dirs["pythond"],
                    "--config-dir", dirs["config"], "--lib-dir", dirs["lib"]],
                   check=True, capture_output=True, text=True)
    return os.path.join(dirs["plugins"], "netdrops.plugin"), dirs["config"]


def cpu_seconds(pid):
    fields = read_bytes("/proc/{0}/stat".format(pid)).decode().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def open_fds(pid):
    return len(os.listdir("/proc/{0}/fd".format(pid)))


def blocked_writing_a_pipe(pid):
    """The main thread sleeps in the kernel's pipe write (pipe_write, anon_pipe_write)."""
    with open("/proc/{0}/wchan".format(pid)) as f:
        return "pipe_write" in f.read()


def failing_cpu_bound(seconds, start_cpu):
    """CPU a failing plugin may use over `seconds`: MAX_IDLE_CPU plus, per retry, what starting
    cost it (`start_cpu`, imports included: a retry builds a new collector, whose cost grows with
    the host's interfaces). A busy loop uses that much every few tens of milliseconds."""
    return MAX_IDLE_CPU + (seconds // RETRY_SECONDS + 1) * start_cpu


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("no {0} after {1} s".format(what, timeout))
        time.sleep(0.1)


class Plugin:
    """A running plugin whose stdout a thread reads, noting when each line arrived; pause()
    makes that reader stop reading, as a stuck Netdata would. stderr goes to a file."""

    def __init__(self, argv, env, stderr_path, pipe_size=None):
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err)
        self.pid = self.proc.pid
        if pipe_size:
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, pipe_size)
        self.lines = []              # (arrival, line)
        self.reading = threading.Event()
        self.reading.set()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        fd, pending = self.proc.stdout.fileno(), b""
        while not self.closed:
            if not self.reading.wait(0.2) or not select.select([fd], [], [], 0.2)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.monotonic()
            *complete, pending = (pending + chunk).split(b"\n")
            self.lines.extend((now, line.decode()) for line in complete)

    def pause(self):
        self.reading.clear()

    def resume(self):
        self.reading.set()

    def text(self):
        return "".join(line + "\n" for _, line in list(self.lines))

    def ticks(self, chart=TICK_CHART, after=0.0):
        """[(arrival, microseconds since the chart's previous update or None)] of one chart."""
        out = []
        for arrival, line in list(self.lines):
            words = line.split()
            if arrival >= after and words[:2] == ["BEGIN", chart]:
                out.append((arrival, int(words[2]) if len(words) > 2 else None))
        return out

    def values(self, chart, after=0.0):
        """[{dim: value}] of one chart's updates that arrived after `after`."""
        out, block = [], None
        for arrival, line in list(self.lines):
            words = shlex.split(line) if line else []
            if words[:2] == ["BEGIN", chart] and arrival >= after:
                block = {}
            elif block is not None and words[:1] == ["SET"]:
                block[words[1]] = int(words[3])
            elif block is not None and words[:1] == ["END"]:
                out.append(block)
                block = None
        return out

    def chart_defined_after(self, after, chart=TICK_CHART):
        return [a for a, line in list(self.lines) if a >= after and line.startswith("CHART " + chart + " ")]

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def failure_lines(self):
        return [line for line in self.stderr().splitlines() if FAILURE_LINE in line]

    def alive(self):
        return self.proc.poll() is None

    def terminate(self, timeout=10):
        """SIGTERM as Netdata sends it; -> exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close_reader(self):
        """Netdata's end of the pipe goes away."""
        self.closed = True
        self.thread.join(timeout=5)
        self.proc.stdout.close()

    def close(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        if not self.closed:
            self.close_reader()


@pytest.fixture
def installed(tmp_path):
    return install_plugin(str(tmp_path / "netdata"))


@pytest.fixture
def start_plugin(tmp_path, installed):
    """start_plugin(prefix=None, pipe_size=None, argv_prefix=()) -> a running Plugin; every
    one is stopped afterwards."""
    plugin_path, config_dir = installed
    started = []

    def start(prefix=None, pipe_size=None, argv_prefix=()):
        env = dict(os.environ, NETDATA_USER_CONFIG_DIR=config_dir)
        env.pop("NETDATA_HOST_PREFIX", None)
        if prefix is not None:
            env["NETDATA_HOST_PREFIX"] = prefix
        plugin = Plugin(list(argv_prefix) + [plugin_path, "1"], env,
                        str(tmp_path / "stderr-{0}.log".format(len(started))), pipe_size)
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        plugin.close()


def wait_ticks(plugin, count, after=0.0, timeout=15, chart=TICK_CHART):
    wait_until(lambda: len(plugin.ticks(chart, after)) >= count, timeout,
               "{0} updates of {1}".format(count, chart))


# -- a host prefix made of copies ----------------------------------------------------------------

def make_host_tree(root, leave_out=()):
    """The /proc files the collector reads, copied under root (readable by user netdata)."""
    files = [SOFTNET, SNMP, "proc/net/snmp6", "proc/net/netstat"]
    files += ["proc/sys/net/core/" + name for name in os.listdir("/proc/sys/net/core")]
    for rel in files:
        if rel in leave_out:
            continue
        try:
            data = read_bytes("/" + rel)
        except OSError:
            continue  # write-only or absent here
        write_file(os.path.join(root, rel), data)
    return root


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data):
    """A new file (a new inode, as a remounted /proc would give), put in place at once."""
    os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
    temp = path + ".new"
    with open(temp, "wb") as f:
        f.write(data)
    os.chmod(temp, 0o644)
    os.replace(temp, path)


def add_softnet_drops(path, cpu_row, drops):
    """Count `drops` more backlog drops (column 2) on one row, in place, as the kernel does:
    same inode, same length (every field is 8 hex digits)."""
    with open(path, "r+b") as f:
        rows = [line.split() for line in f.read().decode().splitlines()]
        rows[cpu_row][1] = "{0:08x}".format((int(rows[cpu_row][1], 16) + drops) % 2 ** 32)
        os.pwrite(f.fileno(), "".join(" ".join(row) + "\n" for row in rows).encode(), 0)


def first_row_cpu(softnet_text):
    fields = softnet_text.split(b"\n")[0].split()
    return int(fields[12], 16) if len(fields) >= 13 else 0  # column 13 is the CPU id (5.10+)


def tree_listing(root):
    return sorted(os.path.join(d, name) for d, _dirs, names in os.walk(root) for name in names)


# -- a slow consumer -------------------------------------------------------------------------------

def test_plugin_blocked_by_a_stalled_reader_sleeps_and_resumes_without_a_backlog(start_plugin):
    """Netdata stops reading for STALL_SECONDS (a 4 KiB pipe, full within a tick): the plugin
    sleeps in write() without CPU and without dying; afterwards the stream is valid protocol,
    one update reports the whole gap, and ticks go on at their pace, not as a burst of the
    missed ones."""
    plugin = start_plugin(pipe_size=4096)
    wait_ticks(plugin, 3)
    plugin.pause()
    wait_until(lambda: blocked_writing_a_pipe(plugin.pid), 10, "plugin blocked in a pipe write")
    cpu_before = cpu_seconds(plugin.pid)
    time.sleep(STALL_SECONDS)
    stall_cpu = cpu_seconds(plugin.pid) - cpu_before
    assert plugin.alive()
    assert blocked_writing_a_pipe(plugin.pid), "the plugin stopped waiting for the reader"
    assert stall_cpu < MAX_IDLE_CPU, "{0:.2f} CPU-s while blocked for {1} s".format(stall_cpu, STALL_SECONDS)

    resumed = time.monotonic()
    plugin.resume()
    time.sleep(6)
    assert plugin.terminate() == 0
    stream = parse(plugin.text())  # strict: no line torn by the stall
    assert not stream.disabled

    after = plugin.ticks(after=resumed)
    gaps = [i for i, (_, since) in enumerate(after) if since and since >= (STALL_SECONDS - 2) * 1e6]
    assert len(gaps) == 1, "expected one update covering the stall: {0}".format(after)
    following = after[gaps[0] + 1:]
    assert len(following) >= 4, "collection did not go on after the stall: {0}".format(after)
    # The first tick after the catch-up may come early (it is aligned to the second again);
    # a burst of catch-up ticks would come milliseconds apart.
    quick = [since for _, since in following if since is not None and since < 0.5e6]
    assert len(quick) <= 1, "ticks in a burst after the stall: {0}".format(following)
    in_time = [a for a, _ in following if a - after[gaps[0]][0] <= 5]
    assert len(in_time) <= 7, "{0} ticks in the 5 s after the stall".format(len(in_time))
    assert plugin.values(TICK_CHART, after=following[-1][0]), "the last tick had no values"
    assert "Traceback" not in plugin.stderr()
    print("CPU while blocked {0:.2f} s over {1} s; gap update {2:.1f} s; {3} ticks in the 5 s after".format(
        stall_cpu, STALL_SECONDS, after[gaps[0]][1] / 1e6, len(in_time)))


def test_plugin_blocked_on_a_full_pipe_exits_0_on_sigterm(start_plugin):
    """Netdata stuck and stopping the plugin: SIGTERM ends it at once even mid-write."""
    plugin = start_plugin(pipe_size=4096)
    plugin.pause()
    wait_until(lambda: blocked_writing_a_pipe(plugin.pid), 10, "plugin blocked in a pipe write")
    started = time.monotonic()
    assert plugin.terminate(timeout=5) == 0
    assert time.monotonic() - started < 3
    assert "Traceback" not in plugin.stderr()


def test_plugin_blocked_on_a_full_pipe_exits_0_when_the_reader_goes_away(start_plugin):
    """Netdata closes its end while the plugin waits to write: EPIPE, exit 0, no traceback."""
    plugin = start_plugin(pipe_size=4096)
    plugin.pause()
    wait_until(lambda: blocked_writing_a_pipe(plugin.pid), 10, "plugin blocked in a pipe write")
    plugin.close_reader()
    started = time.monotonic()
    assert plugin.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 3
    assert "Traceback" not in plugin.stderr() and "Exception ignored" not in plugin.stderr()


# -- missing /proc files ---------------------------------------------------------------------------

def test_softnet_stat_removed_while_running_is_one_line_then_a_paced_retry_then_recovery(tmp_path, start_plugin):
    """The file every tick needs disappears: one clear line (no traceback), no output and ~no
    CPU while it is missing, retries at RETRY_SECONDS without leaking descriptors, and once the
    file is back, charts again from the new file, in the same process."""
    tree = make_host_tree(str(tmp_path / "host"))
    softnet = os.path.join(tree, SOFTNET)
    original = read_bytes(softnet)
    plugin = start_plugin(prefix=tree)
    wait_ticks(plugin, 2)
    start_cpu = cpu_seconds(plugin.pid)
    fds_running = open_fds(plugin.pid)

    os.remove(softnet)
    wait_until(lambda: plugin.failure_lines(), 3, "log line for the missing file")
    failing = time.monotonic()
    cpu_before = cpu_seconds(plugin.pid)
    time.sleep(2 * RETRY_SECONDS + 1)  # two retries at least
    failing_cpu = cpu_seconds(plugin.pid) - cpu_before
    assert plugin.alive()
    bound = failing_cpu_bound(2 * RETRY_SECONDS + 1, start_cpu)
    assert failing_cpu < bound, "{0:.2f} CPU-s while failing (bound {1:.2f})".format(failing_cpu, bound)
    assert open_fds(plugin.pid) <= fds_running, "a retry leaked descriptors"
    lines = plugin.failure_lines()
    assert len(lines) == 1, "one line for one failure, not one per retry: {0}".format(lines)
    assert softnet in lines[0] and "No such file" in lines[0]
    assert not plugin.ticks(after=failing + 0.5), "values sent while the file was missing"

    write_file(softnet, original)
    restored = time.monotonic()
    wait_until(lambda: plugin.chart_defined_after(restored), RETRY_SECONDS + RECOVERY_MARGIN,
               "charts after the file came back")
    recovery = plugin.chart_defined_after(restored)[0] - restored
    wait_ticks(plugin, 2, after=restored, timeout=RECOVERY_MARGIN)
    add_softnet_drops(softnet, 0, 7)
    first_cpu = "softnet_dropped_" + charts.cpu_dim_name(first_row_cpu(original))
    wait_until(lambda: any(v.get(first_cpu) == 7 for v in plugin.values(DROPPED_CHART, restored)), 5,
               "the drops written into the restored file")
    assert open_fds(plugin.pid) == fds_running
    assert "collecting again" in plugin.stderr()
    assert plugin.terminate() == 0
    parse(plugin.text())  # charts announced anew after the retry: still valid protocol
    assert "Traceback" not in plugin.stderr()
    print("CPU while failing {0:.2f} s over {1} s (bound {2:.2f}); recovered {3:.1f} s after the file "
          "came back".format(failing_cpu, 2 * RETRY_SECONDS + 1, bound, recovery))


def test_softnet_stat_missing_at_start_is_one_line_then_charts_once_it_appears(tmp_path, start_plugin):
    """Started on a host prefix without softnet_stat: one line, nothing on stdout, ~no CPU;
    charts within a retry of the file appearing."""
    tree = make_host_tree(str(tmp_path / "host"), leave_out=(SOFTNET,))
    plugin = start_plugin(prefix=tree)
    wait_until(lambda: plugin.failure_lines(), 10, "log line for the missing file")
    cpu_before = start_cpu = cpu_seconds(plugin.pid)  # imports and a first try
    time.sleep(RETRY_SECONDS + 1)  # one retry at least
    failing_cpu = cpu_seconds(plugin.pid) - cpu_before
    assert plugin.alive()
    bound = failing_cpu_bound(RETRY_SECONDS + 1, start_cpu)
    assert failing_cpu < bound, "{0:.2f} CPU-s while failing (bound {1:.2f})".format(failing_cpu, bound)
    assert len(plugin.failure_lines()) == 1, plugin.stderr()
    assert not [line for _, line in plugin.lines if line.startswith(("CHART", "BEGIN"))]

    write_file(os.path.join(tree, SOFTNET), read_bytes("/" + SOFTNET))
    appeared = time.monotonic()
    wait_ticks(plugin, 2, after=appeared, timeout=RETRY_SECONDS + RECOVERY_MARGIN)
    assert plugin.terminate() == 0
    assert not parse(plugin.text()).disabled
    assert "Traceback" not in plugin.stderr()


def test_missing_snmp_stops_only_the_socket_chart(tmp_path, start_plugin):
    """/proc/net/snmp goes away for a while: only socket_drops misses updates (no job failure,
    no retry pace), every other chart goes on each second, and socket_drops resumes at the
    next tick after the file is back."""
    tree = make_host_tree(str(tmp_path / "host"))
    snmp = os.path.join(tree, SNMP)
    original = read_bytes(snmp)
    plugin = start_plugin(prefix=tree)
    wait_ticks(plugin, 2, chart=SOCKET_CHART)

    os.remove(snmp)
    removed = time.monotonic()
    time.sleep(4)
    assert len(plugin.ticks(after=removed)) >= 3, "the other charts stopped too"
    assert not plugin.ticks(SOCKET_CHART, after=removed + 0.5), "socket values without the file"
    assert not plugin.failure_lines(), "a missing snmp failed the whole tick"

    write_file(snmp, original)
    restored = time.monotonic()
    wait_ticks(plugin, 2, after=restored, timeout=4, chart=SOCKET_CHART)
    assert plugin.terminate() == 0
    parse(plugin.text())
    assert "Traceback" not in plugin.stderr()


def test_missing_snmp_is_said_once_in_the_log(tmp_path, start_plugin):
    """A socket_drops chart that never gets a value needs its reason in error.log, once."""
    tree = make_host_tree(str(tmp_path / "host"), leave_out=(SNMP,))
    plugin = start_plugin(prefix=tree)
    wait_ticks(plugin, 3)
    assert plugin.terminate() == 0
    said = [line for line in plugin.stderr().splitlines() if os.path.join(tree, SNMP) in line]
    assert len(said) == 1, plugin.stderr()


REASONS_NOT_CHARTED = "netdrops.plugin: INFO: drop reasons are not charted: "


def said_beyond_reasons(plugin):
    """The plugin's stderr lines but the one that says why drop reasons are not counted (e.g.
    tracefs not mounted, as on a fresh machine): the only line a healthy plugin may write."""
    lines = plugin.stderr().splitlines()
    assert len([l for l in lines if l.startswith(REASONS_NOT_CHARTED)]) <= 1, lines
    return [l for l in lines if not l.startswith(REASONS_NOT_CHARTED)]


def test_a_host_without_snmp6_or_netstat_keeps_every_chart_and_says_nothing(tmp_path, start_plugin):
    """IPv6 off (no snmp6) or no netstat is a normal host: the socket chart keeps its UDP
    counters at every tick, nothing is logged, and the plugin writes nothing under the prefix."""
    tree = make_host_tree(str(tmp_path / "host"), leave_out=("proc/net/snmp6", "proc/net/netstat"))
    files_before = tree_listing(tree)
    plugin = start_plugin(prefix=tree)
    wait_ticks(plugin, 3, chart=SOCKET_CHART)
    assert plugin.terminate() == 0
    updates = plugin.values(SOCKET_CHART)
    assert all("socket_drops_udp_rcvbuf_errors" in v for v in updates), updates
    assert len(plugin.ticks()) == len(updates), "ticks without socket values"
    assert said_beyond_reasons(plugin) == []
    assert tree_listing(tree) == files_before


# -- read-only mounts ------------------------------------------------------------------------------

def read_only_binds(binds):
    """argv prefix: run the command in a mount namespace of its own in which each (source,
    target) is bind-mounted read-only. The mounts die with the process, whatever the test does."""
    script = ('set -e; while [ "$1" != -- ]; do mount --bind "$1" "$2"; '
              'mount -o remount,bind,ro "$2"; shift 2; done; shift; exec "$@"')
    pairs = [str(path) for pair in binds for path in pair]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"] + pairs + ["--"]


def mount_options(pid, target):
    """The per-mount options ('ro,relatime') of target as the process sees it, or None."""
    with open("/proc/{0}/mountinfo".format(pid)) as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                return fields[5]
    return None


def test_plugin_collects_from_a_read_only_host_prefix(tmp_path, start_plugin):
    """The container layout (`-v /proc:/host/proc:ro -v /sys:/host/sys:ro`): the host's real
    /proc and /sys under a prefix that is read-only all through. The plugin only reads: every
    chart flows, with a dimension per CPU row of softnet_stat and the sysctls in force, and
    nothing is logged."""
    prefix = tmp_path / "host"
    binds = [(prefix, prefix), ("/proc", prefix / "proc"), ("/sys", prefix / "sys")]
    for _, target in binds:
        target.mkdir(parents=True, exist_ok=True)
    plugin = start_plugin(prefix=str(prefix), argv_prefix=read_only_binds(binds))
    wait_ticks(plugin, 3, timeout=20)
    for _, target in binds:
        assert mount_options(plugin.pid, str(target)).split(",")[0] == "ro"
    assert plugin.terminate() == 0
    stream = parse(plugin.text())
    with open("/" + SOFTNET) as f:
        rows = len(f.read().splitlines())
    cpus = [d for d in stream.charts[TICK_CHART]["dims"] if d != "softnet_processed_rps_ipis"]
    assert len(cpus) == rows
    tuning = stream.sets["netdrops_local.tuning"][-1]
    assert tuning["tuning_netdev_max_backlog"] > 0 and tuning["tuning_rmem_max"] > 0
    assert said_beyond_reasons(plugin) == []


def test_installed_plugin_runs_from_read_only_directories(tmp_path, start_plugin):
    """A read-only installation (plugins, lib and config dirs, as on an immutable /usr): the
    plugin starts and collects; Python's unwritable bytecode cache is no error."""
    root = tmp_path / "netdata"
    plugin = start_plugin(argv_prefix=read_only_binds([(root, root)]))
    wait_ticks(plugin, 3, timeout=20)
    assert mount_options(plugin.pid, str(root)).split(",")[0] == "ro"
    assert plugin.terminate() == 0
    assert not parse(plugin.text()).disabled
    assert said_beyond_reasons(plugin) == []


# -- Netdata v2's 120 s limit on a silent plugin ----------------------------------------------------

NETDATA_V2_READ_TIMEOUT = 120  # seconds v2 waits for a line before QUIT and kill (pluginsd_process)


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Recorder:
    """The plugin's stdout: what was written, and when (on the fake clock)."""

    def __init__(self, clock):
        self.clock = clock
        self.writes = []

    def write(self, text):
        self.writes.append((self.clock(), text))

    def flush(self):
        pass


class SilentJob(Job):
    """A job with nothing to say (no charts yet) or whose collection always fails."""

    def __init__(self, update_every, fails):
        Job.__init__(self, "silent", {"update_every": update_every})
        self.fails = fails

    def tick(self, now):
        if self.fails:
            raise OSError("[Errno 2] No such file or directory: '/proc/net/softnet_stat'")
        return ""


@pytest.mark.parametrize("update_every,fails", [(300, False), (1, True), (300, True)])
def test_the_main_loop_writes_a_keepalive_whatever_its_jobs_do(update_every, fails):
    """Over an hour of a fake clock: never KEEPALIVE_SECONDS without a write, and what is written
    is the empty line Netdata takes as nothing."""
    fake = FakeTime()
    out = Recorder(fake.clock)
    job = SilentJob(update_every, fails)
    job.failed = lambda error, now: setattr(job, "next_run", now + RETRY_SECONDS)  # no log lines
    run([job], out, clock=fake.clock, sleep=fake.sleep, max_ticks=5000)
    times = [1000.0] + [when for when, _text in out.writes]
    assert fake.now - 1000.0 > 3600
    assert max(b - a for a, b in zip(times, times[1:])) <= KEEPALIVE_SECONDS
    assert {text for _when, text in out.writes} == {KEEPALIVE} and KEEPALIVE.strip() == ""


def test_a_plugin_whose_only_job_fails_still_writes_within_netdatas_limit(tmp_path, start_plugin):
    """The installed plugin, its one job failing (no softnet_stat): keep-alive lines on stdout,
    never more than KEEPALIVE_SECONDS apart, far inside v2's limit, and nothing else."""
    assert KEEPALIVE_SECONDS * 10 <= NETDATA_V2_READ_TIMEOUT
    tree = make_host_tree(str(tmp_path / "host"), leave_out=(SOFTNET,))
    plugin = start_plugin(prefix=tree)
    wait_until(lambda: plugin.failure_lines(), 10, "log line for the missing file")
    watched = time.monotonic()
    time.sleep(3 * KEEPALIVE_SECONDS + 1)
    seen = [(arrival, line) for arrival, line in list(plugin.lines) if arrival >= watched]
    times = [watched] + [arrival for arrival, _line in seen] + [time.monotonic()]
    gap = max(b - a for a, b in zip(times, times[1:]))
    assert gap <= KEEPALIVE_SECONDS + 1.5, "{0:.1f} s without a line".format(gap)
    assert len(seen) >= 3 and {line for _arrival, line in seen} == {""}, seen
    assert plugin.alive() and len(plugin.failure_lines()) == 1
    assert plugin.terminate() == 0
    print("longest silence of a failing plugin: {0:.1f} s (v2 allows {1} s)".format(gap, NETDATA_V2_READ_TIMEOUT))


# -- under a real Netdata --------------------------------------------------------------------------

def netdrops_plugin_pids(nd):
    pids = []
    for pid in session_pids(nd.proc.pid):
        try:
            with open("/proc/{0}/cmdline".format(pid), "rb") as f:
                if b"netdrops.plugin" in f.read():
                    pids.append(pid)
        except OSError:
            continue  # exited meanwhile
    return pids


def last_entry(nd, chart=TICK_CHART):
    """When Netdata last stored a value of the chart (its wall clock, seconds)."""
    return nd.api("/api/v1/charts")["charts"].get(chart, {}).get("last_entry", 0)


def test_under_netdata_a_missing_softnet_stat_is_one_line_and_the_charts_come_back(netdata_factory):
    """Netdata 1.37 runs the installed plugin on a host prefix; softnet_stat vanishes: error.log
    gets one clear line, the plugin process stays the same and idle, and once the file is back
    Netdata stores values again within a retry."""
    nd = netdata_factory("faults")
    nd.install_netdrops("plugin")
    tree = make_host_tree(os.path.join(nd.root, "host"))  # nd.root is readable by user netdata
    softnet = os.path.join(tree, SOFTNET)
    original = read_bytes(softnet)
    nd.write_config_file("netdrops.conf", "host_prefix: {0}\njobs:\n  - name: local\n".format(tree))
    nd.start()
    nd.wait_chart(TICK_CHART, timeout=60)
    pid = nd.wait_for(lambda: netdrops_plugin_pids(nd), 10, what="netdrops.plugin process")[0]
    start_cpu = cpu_seconds(pid)
    first = last_entry(nd)
    nd.wait_for(lambda: last_entry(nd) > first, 10, what="values stored")

    os.remove(softnet)
    removed = time.time()
    nd.wait_for(lambda: FAILURE_LINE in nd.log_text(), 10, what="failure line in error.log")
    cpu_before = cpu_seconds(pid)
    time.sleep(RETRY_SECONDS + 2)
    failing_cpu = cpu_seconds(pid) - cpu_before
    assert netdrops_plugin_pids(nd) == [pid], "Netdata's plugin was restarted or died"
    bound = failing_cpu_bound(RETRY_SECONDS + 2, start_cpu)
    assert failing_cpu < bound, "{0:.2f} CPU-s while failing (bound {1:.2f})".format(failing_cpu, bound)
    assert last_entry(nd) <= removed + 2, "Netdata stored values while the file was missing"
    log = nd.log_text()
    failures = [line for line in log.splitlines() if FAILURE_LINE in line]
    assert len(failures) == 1 and softnet in failures[0], failures

    write_file(softnet, original)
    restored = time.time()
    nd.wait_for(lambda: last_entry(nd) > restored + 1, RETRY_SECONDS + RECOVERY_MARGIN,
                what="values after the file came back")
    recovery = last_entry(nd) - restored
    assert netdrops_plugin_pids(nd) == [pid]
    log = nd.log_text()
    assert "collecting again" in log
    assert "Traceback" not in log
    print("under Netdata: CPU while failing {0:.2f} s over {1} s (bound {2:.2f}); values again {3:.0f} s "
          "after the file came back".format(failing_cpu, RETRY_SECONDS + 2, bound, recovery))


@pytest.mark.parametrize("factory", ["netdata_factory", "netdata_v2_factory"])
def test_under_netdata_a_failing_plugin_keeps_its_place_with_keepalives(request, factory):
    """Debian's 1.37.1 and the real v2.11 run the installed plugin whose one job fails from the
    start (a host prefix without /proc): the keep-alive lines it writes are taken without a word
    (the failure's own line is the only one about netdrops), the process stays the same."""
    nd = request.getfixturevalue(factory)("keepalive")
    nd.install_netdrops("plugin")
    missing = os.path.join(nd.root, "no-host")
    nd.write_config_file("netdrops.conf", "host_prefix: {0}\njobs:\n  - name: local\n".format(missing))
    nd.start()
    pid = nd.wait_for(lambda: netdrops_plugin_pids(nd), 20, what="netdrops.plugin process")[0]
    logs = ("error.log", "daemon.log", "collector.log")

    def ours():
        return [line for name in logs for line in nd.log_text(name).splitlines()
                if "netdrops.plugin" in line or "[netdrops]" in line]

    nd.wait_for(lambda: any(FAILURE_LINE in line for line in ours()), 20, what="the failure line")
    before = ours()
    time.sleep(2 * KEEPALIVE_SECONDS + 2)  # two keep-alives at least
    assert netdrops_plugin_pids(nd) == [pid], "Netdata restarted or ended the plugin"
    assert ours() == before, "Netdata said something about the keep-alives"
    failures = [line for line in before if FAILURE_LINE in line]
    assert len(failures) == 1 and missing in failures[0], before
