"""VethChurn: veth pairs made and destroyed by the thousand, the way container hosts do.

Each wave of pairs lives in a network namespace of its own, like one batch of containers: the
host-side ends are in the root namespace (where Netdata and the collector run), their peers are
created straight inside the wave's namespace. Deleting that namespace destroys all of its pairs
at once, as the kernel does when containers stop (one batched cleanup: ~0.2 s for 500 pairs
here, where deleting them one `ip link del` at a time takes ~28 ms each). restart() deletes
single pairs and makes them again under the same name with a new ifindex, like a Proxmox CT
(veth<vmid>i0) or a Docker container restarting.

No traffic at all: the peers stay down, so the host-side ends, set up, have no carrier and send
nothing (not even IPv6 router solicitations). Every command goes through `ip -batch -` with
argument lists, never a shell. close() deletes every namespace this object made (and with them
every pair); stale_cleanup() removes what a killed run of this module left behind.
"""

import os
import re
import subprocess
import time

NETNS_PREFIX = "ndchurn-"
# A namespace name says which process made it: ndchurn-<pid>-w<wave>.
NETNS_RE = re.compile(r"^ndchurn-(\d+)-w\d+$")


class ChurnError(RuntimeError):
    pass


def ip_batch(lines, netns=None, timeout=120):
    """Run `ip [-n NS] -batch -` with one command per line (iproute2 syntax, no shell)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    proc = subprocess.run(argv, input="".join(line + "\n" for line in lines),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ChurnError("ip -batch: {0}".format(proc.stderr.strip()[-1000:]))


def netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=30).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def root_links(prefix):
    """Names of the interfaces in the root namespace whose names start with `prefix`."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                         timeout=30).stdout
    names = set()
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]  # "12: name@if3: <...>"
        if name.startswith(prefix):
            names.add(name)
    return names


def pid_alive(pid):
    return os.path.exists("/proc/{0}".format(pid))


def stale_cleanup():
    """Delete namespaces (and so their pairs) left by a churn run whose process is gone."""
    for name in netns_names():
        m = NETNS_RE.match(name)
        if m and not pid_alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


class VethChurn:
    """Waves of veth pairs named `<prefix><group><wave:02d>-<n:03d>` on the host side, so a
    shell pattern `<prefix><group>*` selects one group of every wave (e.g. the charted ones)."""

    def __init__(self, prefix):
        if len(prefix) + 7 > 15:  # IFNAMSIZ - 1
            raise ValueError("interface name prefix too long: " + prefix)
        self.prefix = prefix
        self.pid = os.getpid()
        self.namespaces = []   # made by us and not yet deleted, oldest first
        self.alive = {}        # host-side name -> namespace of its peer
        self.created = 0       # pairs made, restarts included
        self.destroyed = 0     # pairs deleted, restarts included

    def netns_for(self, wave):
        return "{0}{1}-w{2}".format(NETNS_PREFIX, self.pid, wave)

    def name(self, group, wave, n):
        return "{0}{1}{2:02d}-{3:03d}".format(self.prefix, group, wave % 100, n)

    @staticmethod
    def _add_lines(name, netns):
        # The peer is made inside the namespace directly: no moment with both ends in ours.
        return ["link add {0} type veth peer name p{0} netns {1}".format(name, netns),
                "link set {0} up".format(name)]

    def open_wave(self, wave):
        netns = self.netns_for(wave)
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True, timeout=30)
        self.namespaces.append(netns)
        return netns

    def add(self, names, netns):
        lines = []
        for name in names:
            lines += self._add_lines(name, netns)
        ip_batch(lines)
        self.alive.update(dict.fromkeys(names, netns))
        self.created += len(names)

    def restart(self, names):
        """Delete each pair and make it again under the same names (a new ifindex)."""
        lines = []
        for name in names:
            lines.append("link del {0}".format(name))
            lines += self._add_lines(name, self.alive[name])
        ip_batch(lines)
        self.created += len(names)
        self.destroyed += len(names)

    def close_wave(self, netns):
        """Delete a wave's namespace: the kernel destroys all its pairs in one batch."""
        subprocess.run(["ip", "netns", "delete", netns], check=True, capture_output=True,
                       timeout=60)
        self.namespaces.remove(netns)
        gone = [name for name, ns in self.alive.items() if ns == netns]
        for name in gone:
            del self.alive[name]
        self.destroyed += len(gone)
        return gone

    def wait_kernel(self, timeout=60):
        """Wait until the root namespace holds exactly the host-side ends we think are alive
        (namespace deletion finishes in a kernel worker, after `ip netns delete` returns)."""
        deadline = time.monotonic() + timeout
        while True:
            present = root_links(self.prefix)
            if present == set(self.alive):
                return
            if time.monotonic() > deadline:
                raise ChurnError("after {0} s the kernel still has {1} unexpected and misses {2} "
                                 "of our interfaces".format(timeout, len(present - set(self.alive)),
                                                            len(set(self.alive) - present)))
            time.sleep(0.2)

    def close(self):
        """Delete every namespace we made (and so every pair); wait for the kernel to finish."""
        for netns in list(self.namespaces):
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True, timeout=60)
            self.namespaces.remove(netns)
        self.alive.clear()
        leftovers = root_links(self.prefix)
        if leftovers:  # a pair whose peer never reached its namespace (an add cut short)
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(
                "link del {0}\n".format(n) for n in sorted(leftovers)), capture_output=True,
                text=True, timeout=120)
        deadline = time.monotonic() + 60
        while root_links(self.prefix) and time.monotonic() < deadline:
            time.sleep(0.2)
