"""Helpers shared by the benches: a network namespace full of veths, the bare kernel reads the
collector relies on, and CPU/memory readings of this or another process. Standard library only.
"""

import glob
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time

SOCKET_FILES = ("/proc/net/snmp", "/proc/net/snmp6", "/proc/net/netstat")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- timing ------------------------------------------------------------------------------------

def cpu_times(fns, repeat, before=None):
    """Median CPU seconds (process CPU: user + system) of each fn over `repeat` rounds. The
    functions run in turn within each round, so all of them meet the same kernel conditions:
    the cost of a dump of 10,000 veths varies several-fold from one minute to the next.
    `before`, if given, runs untimed ahead of each fn (see CacheEvictor)."""
    samples = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples):
            if before is not None:
                before()
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    return [median(s) for s in samples]


class CacheEvictor:
    """Writes one byte per cache line of a buffer twice the last-level cache, so that what runs
    next finds none of its code or data in the CPU caches: the state a collector meets once a
    second on a host that does other work, unlike a loop that runs it back to back."""

    LINE = 64

    def __init__(self):
        self.buffer = bytearray(2 * last_level_cache_bytes())
        self.zeros = bytes(len(self.buffer) // self.LINE)

    def __call__(self):
        self.buffer[::self.LINE] = self.zeros


def last_level_cache_bytes(default=64 << 20):
    """Size of CPU 0's largest cache, from sysfs ("32768K"), or `default` when it says none."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        text = read_file(index).decode().strip()
        if text[-1:] in units and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * units[text[-1]])
    return max(sizes, default=default)


def median(values):
    return sorted(values)[len(values) // 2]


def process_cpu_seconds(pid):
    """utime + stime of a whole process (all its threads, live or exited), from /proc/PID/stat.
    The kernel reports them in clock ticks (10 ms here): use deltas over many collections."""
    with open("/proc/{0}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid="self"):
    with open("/proc/{0}/status".format(pid)) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the bare kernel reads ---------------------------------------------------------------------

def _recv_until_done(rtnl):
    from netdrops_collector.kernel.netlink import NLMSG_DONE
    while True:
        n = rtnl.sock.recv_into(rtnl.buf)
        # NLMSG_DONE is the last message of the last buffer: its type sits 16 bytes from the end
        # of that buffer (header 16 + errno 4).
        if n >= 20 and rtnl.buf[n - 16] == NLMSG_DONE and rtnl.buf[n - 15] == 0:
            return


def bare_stats_dump(rtnl):
    """What the collector's kernel read costs by itself: the RTM_GETSTATS request and every
    recv, nothing parsed."""
    from netdrops_collector.kernel import netlink
    rtnl.seq += 1
    payload = netlink.IF_STATS_MSG.pack(socket.AF_UNSPEC, 0, 0, 1)
    rtnl.sock.send(netlink.build_request(netlink.RTM_GETSTATS, payload, rtnl.seq))
    _recv_until_done(rtnl)


def bare_link_dump(rtnl):
    """An RTM_GETLINK dump (every attribute of every link, stats included), nothing parsed:
    what node_exporter's netdev collector asks the kernel for by default (netlink)."""
    from netdrops_collector.kernel import netlink
    rtnl.seq += 1
    payload = netlink.IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    rtnl.sock.send(netlink.build_request(netlink.RTM_GETLINK, payload, rtnl.seq))
    _recv_until_done(rtnl)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def read_socket_files():
    return [read_file(p) for p in SOCKET_FILES]


class KeptReads:
    """The bare read of /proc files as the collector does it each tick: one pread at offset 0
    on a descriptor kept open (procfs builds the text anew), no path walk, nothing parsed."""

    def __init__(self, paths):
        self.fds = [os.open(p, os.O_RDONLY) for p in paths]

    def __call__(self):
        return [os.pread(fd, 1 << 16, 0) for fd in self.fds]

    def close(self):
        for fd in self.fds:
            os.close(fd)


# -- the namespace -----------------------------------------------------------------------------

def make_namespace(name, n_ifaces, ipv6=False):
    """A network namespace with n_ifaces interfaces (n_ifaces // 2 veth pairs), all up. If this
    fails or is interrupted halfway, the namespace is deleted again.

    IPv6 is off in it unless asked for: fresh links send router solicitations and MLD reports
    for a minute or more, which would make a bench of the idle steady state measure the first
    minute of 10,000 links instead (bench/statsdiff_busy.py measures busy counters on purpose)."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        if not ipv6:
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        pairs = n_ifaces // 2
        batch = "".join("link add nb{0}a type veth peer name nb{0}b\n".format(i) for i in range(pairs))
        subprocess.run(["ip", "-n", name, "-batch", "-"], input=batch.encode(), check=True)
        ups = "".join("link set nb{0}{1} up\n".format(i, s) for i in range(pairs) for s in "ab")
        subprocess.run(["ip", "-n", name, "-batch", "-"], input=ups.encode(), check=True)
    except BaseException:
        delete_namespace(name)
        raise


def namespace_pids(name):
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def delete_namespace(name, timeout=30):
    """End what still runs in our namespace (only what this bench started lives there), then
    delete it."""
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while True:
        pids = namespace_pids(name)
        if not pids:
            break
        if time.monotonic() > deadline - timeout / 2:
            sig = signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    subprocess.run(["ip", "netns", "del", name], check=True)


def raise_on_sigterm():
    """A SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the clean-up still runs."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, interrupt)


def run_inside(ns, argv, grace=90):
    """Run argv in namespace ns, its stdout captured and returned. On Ctrl-C or SIGTERM the child
    gets one SIGINT and `grace` seconds to clean up after itself before it is killed (its own
    session: a Ctrl-C at the terminal reaches only us, and a second one cannot cut its clean-up)."""
    child = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        out, _ = child.communicate()
    except BaseException:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        raise
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, argv, out)
    return out


def this_script_inside(ns, script, args):
    """run_inside() for `python3 SCRIPT --inner ARGS...`, this interpreter."""
    return run_inside(ns, [sys.executable, os.path.abspath(script), "--inner"] + list(args))


# -- which netdrops is measured ----------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"collector": "netdrops_collector", "advisor": "netdrops_advisor"}


def git(*args):
    return subprocess.run(["git", "-C", REPO] + list(args), check=True, capture_output=True, text=True).stdout


def working_tree_version():
    """'git <commit>' of the working tree the installed (editable) package runs from, and
    whether collector/ or advisor/ differ from it: another engineer may be editing them."""
    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        changed = git("status", "--porcelain", "--", *PACKAGES).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return "working tree at git {0}{1}".format(
        head, ", {0} uncommitted change(s) in collector/ or advisor/".format(len(changed)) if changed else ", clean")


def export_packages(ref, dest):
    """The netdrops packages as committed at ref, importable with PYTHONPATH=dest (it takes
    precedence over the editable install); returns the commit."""
    commit = git("rev-parse", "--verify", ref + "^{commit}").strip()
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit] + list(PACKAGES),
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.11.4+: plain files only, and says so to 3.12+
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)
    for src, package in PACKAGES.items():
        os.rename(os.path.join(dest, src), os.path.join(dest, package))
    return commit



# -- tracefs -----------------------------------------------------------------------------------

TRACEFS = "/sys/kernel/tracing"


def tracefs_inside():
    """In a process that `ip netns exec` started (and so in a mount namespace of its own, unlike
    its parent): tracefs at /sys/kernel/tracing, mounted if
    missing (`ip netns exec` mounts a fresh /sys, which hides the host's tracefs). That mount
    namespace is the process's own and goes with it: the host's mounts are never touched.
    Returns what it did."""
    if os.readlink("/proc/self/ns/mnt") == os.readlink("/proc/{0}/ns/mnt".format(os.getppid())):
        raise RuntimeError("tracefs_inside() is for a process in its own mount namespace")
    if os.path.ismount(TRACEFS):
        return "tracefs already mounted in the namespace"
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    return "tracefs mounted in the namespace's own mount namespace (gone with it)"
