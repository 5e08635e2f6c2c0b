"""DropLab: real receive-path drops in a throwaway network namespace.

The lab makes a namespace with a veth pair (host side in the root namespace, `eth0` inside),
gives both ends IPv4 link-local addresses in a /30, and steers the host side's receive queue to
CPU 1 with RPS. A sender pinned to CPU 0 inside the namespace sends UDP bursts to a socket bound
on the host side. Each packet is queued on CPU 1's backlog; with a tiny net.core.netdev_max_backlog
the burst overflows it, and the kernel counts every loss in softnet_stat column 2 (CPU 1) and in
the host veth's rx_dropped. Traffic never leaves the pair: the addresses are link-local and only
this pair carries the /30.

Measured on the project VM (2 vCPUs, kernel 6.18, other tests and Netdata instances running
meanwhile), netdev_max_backlog=2, veth rx_dropped per second over 20-60 s windows; softnet
column 2 on CPU 1 rose by exactly as much whenever nothing else was dropping:

    preset     bursts/s x size   drops/s measured                              use
    SEED       1 x 5             2.0 1.83 1.73 1.60 1.12 1.67 1.57 1.9 2.0     0.5 < rate < 2.97
    INCIDENT   2 x 5             3.63 3.17 3.4 3.3 2.9                         like the seed case
    HEAVY      3 x 30            39.7 27.3 27.9 26.9 17.0 26.4 43.7            far above 3
    (none)     1 x 10            3.45 2.53 5.57 (facts.md: about 5)            too irregular
    (none)     1 x 4, 2 x 3      0.9, 0                                        too few

A burst of five loses about two packets (two wait in the backlog, one is being processed), so
SEED and INCIDENT are steady; longer bursts race the receiving CPU and vary more.
With netdev_max_backlog=1000 the same traffic drops nothing. UDP_OVERRUN keeps the default
backlog and points the bursts at a socket with a tiny SO_RCVBUF that nobody reads: after the
first few packets every one becomes a UDP RcvbufErrors, 10.0/s measured (2 x 5), and no backlog
drop.

netdev_max_backlog=2 is global: while a lab runs, any other burst on the machine (other
namespaces, loopback) can drop too and adds to softnet_stat, never to this veth's rx_dropped.

Global state (netdev_max_backlog, any net.core sysctl set through the lab, rps_cpus) is saved
before the first change and restored on exit, on exceptions, KeyboardInterrupt and SIGTERM. An
exclusive file lock serialises labs across processes, and the lab records what it changed in a
state file, so a lab whose process was killed outright is cleaned up by the next one.
"""

import collections
import fcntl
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time

LOCK_PATH = "/run/netdrops-lab.lock"
STATE_PATH = "/run/netdrops-lab.state.json"
NETNS_PREFIX = "ndlab-"
SYSTEM_PYTHON = "/usr/bin/python3"  # exists wherever Debian's netdata-plugins-python does
RPS_TARGET_CPU = 1
SENDER_CPU = 0
DEFAULT_PORT = 47000

Traffic = collections.namedtuple("Traffic", "bursts_per_sec burst_size backlog drain")
Traffic.__doc__ = "A named traffic setting: bursts, netdev_max_backlog to use, receiver drains?"

# Rates measured here: see the module docstring.
SEED = Traffic(bursts_per_sec=1, burst_size=5, backlog=2, drain=True)
INCIDENT = Traffic(bursts_per_sec=2, burst_size=5, backlog=2, drain=True)
HEAVY = Traffic(bursts_per_sec=3, burst_size=30, backlog=2, drain=True)
UDP_OVERRUN = Traffic(bursts_per_sec=2, burst_size=5, backlog=1000, drain=False)

# The sender runs inside the namespace under Debian's python; argv: dst port bursts/s size.
SENDER_CODE = r"""
import itertools, socket, sys, time
dst, port, rate, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 64
print("sending", flush=True)
start = time.monotonic()
for tick in itertools.count(1):
    for _ in range(size):
        try:
            sock.sendto(payload, (dst, port))
        except OSError:
            pass  # e.g. ENOBUFS or an ICMP error reported back: keep the rhythm
    time.sleep(max(0.0, start + tick / rate - time.monotonic()))
"""

_lab_numbers = itertools.count()


class LabError(RuntimeError):
    pass


def run(*argv):
    """Run a command (argument list, no shell); raise LabError with its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise LabError("{0}: {1}".format(" ".join(argv), proc.stderr.strip()))
    return proc.stdout


def read_text(path):
    with open(path) as f:
        return f.read().strip()


def write_text(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def sysctl_path(key):
    return "/proc/sys/" + key.replace(".", "/")


def softnet_dropped():
    """Column 2 of /proc/net/softnet_stat by CPU id (column 13; the row number before 5.10)."""
    dropped = {}
    with open("/proc/net/softnet_stat") as f:
        for row, line in enumerate(f):
            fields = line.split()
            cpu = int(fields[12], 16) if len(fields) >= 13 else row
            dropped[cpu] = int(fields[1], 16)
    return dropped


def udp_rcvbuf_errors():
    """Udp RcvbufErrors from /proc/net/snmp (header line, then values line)."""
    with open("/proc/net/snmp") as f:
        udp = [line.split()[1:] for line in f if line.startswith("Udp:")]
    return int(dict(zip(udp[0], udp[1]))["RcvbufErrors"])


class KernelCounters(collections.namedtuple(
        "KernelCounters", "when softnet_dropped rx_dropped rx_packets udp_rcvbuf_errors")):
    """The kernel's own numbers, to cross-check what the collector reports."""

    def minus(self, earlier):
        """Counter increases since `earlier` (32-bit softnet fields wrap)."""
        return KernelCounters(
            when=self.when - earlier.when,
            softnet_dropped={cpu: (n - earlier.softnet_dropped.get(cpu, 0)) % 2**32
                             for cpu, n in self.softnet_dropped.items()},
            rx_dropped=self.rx_dropped - earlier.rx_dropped,
            rx_packets=self.rx_packets - earlier.rx_packets,
            udp_rcvbuf_errors=self.udp_rcvbuf_errors - earlier.udp_rcvbuf_errors,
        )


class _Guard:
    """The cross-process exclusive lock, shared by nested labs of one process, and the record
    of what this process changed (namespaces, original values) for recover_stale_lab()."""

    def __init__(self):
        self.fd = None
        self.holders = 0
        self.state = {"netns": [], "saved": {}}

    def acquire(self, timeout):
        if self.holders == 0:
            self.fd = _lock_file(timeout)
            recover_stale_lab()
        self.holders += 1

    def release(self):
        self.holders -= 1
        if self.holders == 0:
            _remove(STATE_PATH)
            self.state = {"netns": [], "saved": {}}
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def note(self, netns=None, path=None, original=None):
        if netns:
            self.state["netns"].append(netns)
        if path:
            self.state["saved"].setdefault(path, original)  # the outermost original wins
        with open(STATE_PATH, "w") as f:
            json.dump(self.state, f)


def _lock_file(timeout):
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise LabError("another drop lab still holds {0}".format(LOCK_PATH))
            time.sleep(0.2)


_GUARD = _Guard()


class DropLab:
    """Context manager: a namespace + veth pair that drops packets on demand.

    with DropLab() as lab:
        lab.run_traffic(SEED)            # or set_backlog(2) + start_udp_bursts(1, 5)
        before = lab.kernel_counters()
        time.sleep(10)
        delta = lab.kernel_counters().minus(before)
    """

    def __init__(self, host_ifname=None, lock_timeout=1800):
        number = next(_lab_numbers)
        pid = os.getpid()
        self.netns = "{0}{1}-{2}".format(NETNS_PREFIX, pid, number)
        self.host_ifname = host_ifname or "ndl{0}h{1}".format(pid % 10000, number)
        self.ns_ifname = "eth0"
        # 169.254.200-249.x/30: link-local, clear of 169.254.169.254 and of the reserved
        # first and last /24.
        third, fourth = 200 + (pid + number // 64) % 50, (number % 64) * 4
        self.host_addr = "169.254.{0}.{1}".format(third, fourth + 1)
        self.ns_addr = "169.254.{0}.{1}".format(third, fourth + 2)
        self.lock_timeout = lock_timeout
        self._saved = {}  # path -> original text, in the order changed
        self._procs = []
        self._receiver = None
        self._received_before = 0
        self._old_sigterm = None
        self._open = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self):
        _GUARD.acquire(self.lock_timeout)
        self._open = True
        try:
            self._trap_sigterm()
            self._create_pair()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Stop traffic, delete the namespace (and so the veth), restore what was changed."""
        if not self._open:
            return
        self._open = False
        try:
            self.stop_traffic()
        finally:
            try:
                self._restore_saved()
                subprocess.run(["ip", "netns", "delete", self.netns],
                               capture_output=True, timeout=30)
            finally:
                self._untrap_sigterm()
                _GUARD.release()

    def _trap_sigterm(self):
        # By default SIGTERM kills the process without running __exit__: make it an exception.
        # A handler someone else installed (tests/conftest.py's) is left alone.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)

    def _untrap_sigterm(self):
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def _create_pair(self):
        _GUARD.note(netns=self.netns)
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.host_ifname, "type", "veth",
            "peer", "name", self.ns_ifname, "netns", self.netns)
        # No IPv6 on the pair: router solicitations and MLD would add to rx_packets.
        write_text("/proc/sys/net/ipv6/conf/{0}/disable_ipv6".format(self.host_ifname), 1)
        self.ns_exec("sysctl", "-q", "-w",
                     "net.ipv6.conf.{0}.disable_ipv6=1".format(self.ns_ifname))
        run("ip", "addr", "add", self.host_addr + "/30", "dev", self.host_ifname)
        run("ip", "-n", self.netns, "addr", "add", self.ns_addr + "/30", "dev", self.ns_ifname)
        run("ip", "link", "set", self.host_ifname, "up")
        run("ip", "-n", self.netns, "link", "set", self.ns_ifname, "up")
        run("ip", "-n", self.netns, "link", "set", "lo", "up")
        self.set_rps_cpus(1 << RPS_TARGET_CPU)

    def ns_exec(self, *argv):
        return run("ip", "netns", "exec", self.netns, *argv)

    # -- global settings, always restored --------------------------------------------------

    def _change(self, path, value):
        if path not in self._saved:
            self._saved[path] = read_text(path)
            _GUARD.note(path=path, original=self._saved[path])
        write_text(path, value)

    def _restore_saved(self):
        for path, original in reversed(list(self._saved.items())):
            try:
                write_text(path, original)
            except FileNotFoundError:
                pass  # a sysfs file of a device that is already gone
        self._saved.clear()

    def set_sysctl(self, key, value):
        """Set a sysctl such as net.core.netdev_budget; the original comes back on exit."""
        self._change(sysctl_path(key), value)

    def set_backlog(self, n):
        self.set_sysctl("net.core.netdev_max_backlog", n)

    def set_rps_cpus(self, mask):
        self._change("/sys/class/net/{0}/queues/rx-0/rps_cpus".format(self.host_ifname),
                     format(mask, "x"))

    # -- traffic ---------------------------------------------------------------------------

    def run_traffic(self, traffic, port=DEFAULT_PORT):
        """Apply a Traffic preset: its backlog, then its bursts."""
        self.set_backlog(traffic.backlog)
        self.start_udp_bursts(traffic.bursts_per_sec, traffic.burst_size, port=port,
                              drain=traffic.drain)

    def start_udp_bursts(self, bursts_per_sec, burst_size, port=DEFAULT_PORT, drain=True):
        """Receiver on the host side, sender in the namespace on CPU 0, sending bursts.

        drain=False binds a socket with a tiny receive buffer that nobody reads: the packets
        then die as UDP RcvbufErrors instead of backlog drops.
        """
        if self._receiver is not None:
            raise LabError("traffic already running; stop_traffic() first")
        self._receiver = Receiver(self.host_addr, port, drain)
        sender = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "taskset", "-c", str(SENDER_CPU),
             SYSTEM_PYTHON, "-c", SENDER_CODE,
             self.host_addr, str(port), str(bursts_per_sec), str(burst_size)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(sender)
        if sender.stdout.readline().strip() != "sending":  # '' if it died
            sender.wait(timeout=10)
            raise LabError("UDP sender failed: " + sender.stderr.read().strip())

    def start_python(self, code, *args, in_namespace=True, cpu=SENDER_CPU):
        """Run `code` under Debian's python, pinned to `cpu`, inside the namespace (or in the
        root namespace), after it prints its first line; stopped with the lab's traffic."""
        argv = ["taskset", "-c", str(cpu), SYSTEM_PYTHON, "-c", code] + [str(a) for a in args]
        if in_namespace:
            argv = ["ip", "netns", "exec", self.netns] + argv
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        first = proc.stdout.readline().strip()
        if not first:  # it died before it was ready
            proc.wait(timeout=10)
            raise LabError("lab process failed: " + proc.stderr.read().strip())
        return proc, first

    def stop_traffic(self):
        for proc in self._procs:
            proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        self._procs = []
        if self._receiver is not None:
            self._receiver.close()
            self._received_before += self._receiver.count
            self._receiver = None

    @property
    def received(self):
        """Packets the draining receivers of this lab have read (none when they do not drain)."""
        return self._received_before + (self._receiver.count if self._receiver else 0)

    # -- the kernel's numbers --------------------------------------------------------------

    def kernel_counters(self):
        stats = "/sys/class/net/{0}/statistics/".format(self.host_ifname)
        return KernelCounters(
            when=time.monotonic(),
            softnet_dropped=softnet_dropped(),
            rx_dropped=int(read_text(stats + "rx_dropped")),
            rx_packets=int(read_text(stats + "rx_packets")),
            udp_rcvbuf_errors=udp_rcvbuf_errors(),
        )

    def measure(self, seconds):
        """Counter increases over `seconds` of whatever traffic is running."""
        before = self.kernel_counters()
        time.sleep(seconds)
        return self.kernel_counters().minus(before)


class Receiver:
    """A UDP socket on the host side: drained by a thread, or left full on purpose."""

    def __init__(self, addr, port, drain):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.count = 0
        self._stop = threading.Event()
        self._thread = None
        if not drain:
            # The kernel doubles this and applies its minimum: a few packets fill it.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        self.sock.bind((addr, port))
        if drain:
            self.sock.settimeout(0.2)
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _drain(self):
        while not self._stop.is_set():
            try:
                self.sock.recv(2048)
                self.count += 1
            except socket.timeout:
                pass

    def close(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.sock.close()


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def recover_stale_lab():
    """Undo what a lab killed outright (SIGKILL) left; we hold the lock, so that lab is dead."""
    try:
        with open(STATE_PATH) as f:
            state = json.load(f)
    except (FileNotFoundError, ValueError):
        return
    for path, original in state.get("saved", {}).items():
        try:
            write_text(path, original)
        except OSError:
            pass
    for netns in state.get("netns", []):
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=30)
    _remove(STATE_PATH)
