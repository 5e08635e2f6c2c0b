"""Facts about the machine the advisor runs on: CPUs (online, isolated), whether it can change
the host's net.core settings (initial network namespace, privileged, /proc/sys writable), the
kernel's HZ, and per-interface RX queues and RPS masks.

Readers take the collector's HostFS (so tests can point them at a tree); the parse_* helpers
take text.
"""

import os
import re
import subprocess

from netdrops_collector.kernel import tuning
from netdrops_collector.kernel.softnet import parse_cpu_list

from . import udp_sockets
from ..diagnose.evidence import HostFacts, SocketDrop

FULL_UID_MAP = ("0", "0", "4294967295")
# What the kernel writes (ASCII digits, 'a-b' ranges, commas), up to CONFIG_NR_CPUS's maximum of
# 8192. Checked before expanding: int() alone takes '1_0', '+1' and non-ASCII digits, and a
# garbled '0-99999999999' would be expanded into billions of ints.
CPU_LIST_TEXT = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*", re.ASCII)
MAX_CPUS = 8192


def parse_cpu_list_file(text):
    """A sysfs CPU list; empty, '(null)' (nohz_full unset on some kernels) or garbled -> []."""
    if text is None:
        return []
    text = text.strip()
    if not text or text == "(null)" or not CPU_LIST_TEXT.fullmatch(text):
        return []
    for part in text.split(","):
        lo, _sep, hi = part.partition("-")
        if int(hi or lo) >= MAX_CPUS or int(hi or lo) < int(lo):
            return []   # more CPUs than a kernel can have, or a range backwards: garbled
    try:
        return parse_cpu_list(text)
    except ValueError:
        return []


def parse_uid_map(text):
    """True when /proc/self/uid_map maps less than the whole uid range from 0: a user namespace
    of an unprivileged container."""
    lines = [line.split() for line in (text or "").strip().splitlines() if line.strip()]
    return not (len(lines) == 1 and tuple(lines[0]) == FULL_UID_MAP)


def parse_kernel_hz(config_text):
    for line in config_text.splitlines():
        if line.startswith("CONFIG_HZ="):
            try:
                hz = int(line.split("=", 1)[1])
            except ValueError:
                return None
            return hz if hz > 0 else None   # recommend.py divides by it
    return None


def parse_netns_list(text):
    """`ip netns list` -> {netns id: name} for namespaces that have an id here."""
    out = {}
    for line in text.splitlines():
        name, _sep, rest = line.strip().partition(" (id: ")
        if rest.endswith(")"):
            try:
                out[int(rest[:-1])] = name
            except ValueError:
                pass
    return out


def read_host_facts(hostfs):
    online = parse_cpu_list_file(hostfs.read_value("sys/devices/system/cpu/online")) or None
    isolated = set(parse_cpu_list_file(hostfs.read_value("sys/devices/system/cpu/isolated")))
    isolated |= set(parse_cpu_list_file(hostfs.read_value("sys/devices/system/cpu/nohz_full")))
    try:
        with open("/proc/self/uid_map") as f:
            unprivileged = parse_uid_map(f.read())
    except OSError:
        unprivileged = None
    try:
        read_only = bool(os.statvfs(hostfs.path("proc/sys")).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = None
    return HostFacts(
        local=True,
        is_root=os.geteuid() == 0,
        online_cpus=online,
        isolated_cpus=sorted(isolated),
        hz=read_kernel_hz(hostfs),
        # netdev_max_backlog (like netdev_budget) exists only in the initial network namespace
        init_netns=hostfs.exists(tuning.sysctl_path("netdev_max_backlog")),
        unprivileged_userns=unprivileged,
        proc_sys_read_only=read_only,
    )


def read_kernel_hz(hostfs):
    release = os.uname().release
    for path in ("boot/config-" + release, "lib/modules/{0}/config".format(release)):
        text = hostfs.read_value(path)
        if text:
            return parse_kernel_hz(text)
    return None


def read_rx_queues(hostfs, device):
    """(queue count, [mask text per queue], [rps_flow_cnt per queue]) or None if the device is gone
    (or has no RX queues); an unreadable mask reads "0" and a count 0, as the kernel's defaults."""
    queues = tuning.read_rx_queues(hostfs, device)
    if not queues:
        return None
    return (len(queues), [mask or "0" for _q, mask, _f in queues],
            [flow if flow is not None else 0 for _q, _m, flow in queues])


def read_numa_cpus(hostfs, device):
    """CPUs of the NUMA node a NIC hangs off, or None (virtual device, single node, unknown)."""
    node = hostfs.read_value("sys/class/net", device, "device/numa_node")
    try:
        node = int(node)
    except (TypeError, ValueError):
        return None
    if node < 0:
        return None
    return parse_cpu_list_file(hostfs.read_value("sys/devices/system/node/node{0}/cpulist".format(node))) or None


def named_netns():
    """{netns id: name} of namespaces created with `ip netns` (Docker's are not listed)."""
    try:
        proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_netns_list(proc.stdout) if proc.returncode == 0 else {}


def enrich_interfaces(evidence, hostfs):
    """Fill in what only this machine can say about its interfaces: RX queues, RPS masks, NUMA
    CPUs, and the named namespace behind a veth peer."""
    names = None
    for iface in evidence.interfaces:
        queues = read_rx_queues(hostfs, iface.name)
        if queues is not None:
            iface.rx_queues, iface.rps_masks, iface.rps_flow_cnt = queues
        if iface.kind == "physical":
            iface.numa_cpus = read_numa_cpus(hostfs, iface.name)
        if iface.peer and "netns id" in iface.peer and not iface.container:
            if names is None:
                names = named_netns()
            nsid = _nsid_of(iface.peer)
            if nsid in names:
                iface.container = "netns " + names[nsid]


def _nsid_of(peer):
    """'ifindex 2 (netns id 0)' -> 0."""
    try:
        return int(peer.rsplit("netns id", 1)[1].strip(" )"))
    except (IndexError, ValueError):
        return None


MAX_SOCKETS_SHOWN = 5


def udp_sockets_now(hostfs):
    """UDP sockets with drops since they opened: what a single look can tell (Netdata evidence)."""
    found = [s for s in udp_sockets.read_udp_sockets(hostfs) if s.drops > 0]
    found.sort(key=lambda s: -s.drops)
    return [SocketDrop(s.proto, s.address, s.port, s.drops, "open", s.rx_queue, s.inode)
            for s in found[:MAX_SOCKETS_SHOWN]]


def name_socket_owners(evidence, proc="/proc"):
    """Fill in which processes hold the sockets that dropped (the top few only)."""
    shown = evidence.udp_socket_drops[:MAX_SOCKETS_SHOWN]
    evidence.udp_socket_drops = shown
    found = udp_sockets.owners([s.inode for s in shown], proc)
    for sock in shown:
        sock.owners = sorted(found.get(sock.inode, []))
