"""Which container sits behind a host-side veth or tap, where the name or the host can tell.

Name conventions come first because they cost nothing: Proxmox names a CT's host-side veth
`veth<vmid>i<n>` and a VM's tap `tap<vmid>i<n>` (firewall bridges `fwpr<vmid>p<n>`,
`fwln<vmid>i<n>`). Docker's `veth<hex>` names carry nothing, so a Docker resolver maps the
peer's network namespace id to a container (see DockerResolver); it needs root.
"""

import os
import re
import time

PROXMOX_PATTERNS = (
    (re.compile(r"^veth(\d+)i(\d+)$"), "ct"),
    (re.compile(r"^tap(\d+)i(\d+)$"), "vm"),
    (re.compile(r"^fw(?:ln|pr)(\d+)[ip](\d+)$"), "guest"),
)


def container_from_name(name):
    """'veth101i0' -> 'ct101'; None when the name follows no known convention."""
    for pattern, prefix in PROXMOX_PATTERNS:
        m = pattern.match(name)
        if m:
            return "{0}{1}".format(prefix, m.group(1))
    return None


# cgroup paths of container managers -> (manager, id or name). Docker with the systemd cgroup
# driver uses docker-<id>.scope, with cgroupfs /docker/<id>; LXC (and Proxmox CTs) /lxc/<name>
# or lxc.payload.<name>.
CGROUP_PATTERNS = (
    (re.compile(r"/docker-([0-9a-f]{64})\.scope"), "docker"),
    (re.compile(r"/docker/([0-9a-f]{64})"), "docker"),
    (re.compile(r"/libpod-([0-9a-f]{64})\.scope"), "podman"),
    (re.compile(r"/cri-containerd-([0-9a-f]{64})\.scope"), "k8s"),
    (re.compile(r"/lxc\.payload\.([^/\s]+)"), "lxc"),
    (re.compile(r"/lxc/([^/\s]+)"), "lxc"),
)


def container_from_cgroup(text):
    """/proc/PID/cgroup text -> (manager, id) of the container the process is in, or None."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        for pattern, manager in CGROUP_PATTERNS:
            m = pattern.search(path)
            if m:
                return manager, m.group(1)
    return None


def unnamed(inode):
    """The label of a network namespace without a name or a container: its inode."""
    return "netns:{0}".format(inode)


def unnamed_of(label):
    """`label` when it is an unnamed() label, else None."""
    return label if label.startswith("netns:") and label[len("netns:"):].isdigit() else None


def docker_name_from_config(text):
    """Docker's config.v2.json -> the container's name without its leading '/', or None."""
    m = re.search(r'"Name"\s*:\s*"/?([^"]+)"', text)
    return m.group(1) if m else None


class NetnsResolver:
    """Names the container behind a network namespace id (a veth peer's IFLA_LINK_NETNSID).

    Walks `ip netns` names and /proc/*/ns/net, asking the kernel which id each namespace has
    here. That needs root (other processes' namespaces), so without it names stay unknown. A walk
    happens only for an id not seen before, at most once per RESCAN_SECONDS.

    Labels: "host" (the initial namespace, seen from inside another), "netns:NAME" (ip netns),
    a container's ("docker:web", "lxc:101", ...), else "netns:<inode>" for a namespace without a
    name (`unshare -n`): the inode is what `lsns -t net` and `ls -l /proc/PID/ns/net` show. A
    process id is no label: "pid:2" was the host's namespace seen through kthreadd.
    """

    RESCAN_SECONDS = 10

    def __init__(self, hostfs, get_nsid, clock=time.monotonic):
        self.hostfs = hostfs
        self.get_nsid = get_nsid
        self.clock = clock
        self.names = {}
        self.last_scan = None

    def name_for(self, nsid):
        if nsid is None or nsid < 0:
            return None
        if nsid not in self.names:
            now = self.clock()
            if self.last_scan is None or now - self.last_scan >= self.RESCAN_SECONDS:
                self.last_scan = now
                self.names = self._scan()
        return self.names.get(nsid)

    def _nsid_of(self, path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return self.get_nsid(fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _scan(self):
        names = {}
        try:
            seen = {os.stat("/proc/self/ns/net").st_ino}  # our own namespace: most processes
        except OSError:
            seen = set()
        host_inode = self._host_inode()
        for pid in sorted((p for p in self.hostfs.listdir("proc") if p.isdigit()), key=int):
            ns_path = self.hostfs.path("proc", pid, "ns/net")
            try:
                inode = os.stat(ns_path).st_ino
            except OSError:
                continue  # gone, or not ours to look at (not root)
            if inode in seen:
                continue
            seen.add(inode)
            nsid = self._nsid_of(ns_path)
            if nsid is None or nsid in names:
                continue
            if inode == host_inode:
                names[nsid] = "host"
            else:
                names[nsid] = self._container_of_pid(pid) or unnamed(inode)
        for netns in self.hostfs.listdir("run/netns"):
            nsid = self._nsid_of(self.hostfs.path("run/netns", netns))
            if nsid is not None and (nsid not in names or names[nsid] == unnamed_of(names[nsid])):
                names[nsid] = "netns:" + netns
        return names

    def _host_inode(self):
        """The initial network namespace's inode. PID 1's may be unreadable (a non-dumpable init:
        EACCES even for root), so kthreadd's (PID 2, a kernel thread: always in the initial
        namespaces) is the fallback, when PID 2 is kthreadd (not inside a PID namespace)."""
        # Run inside a container, a peer in the host's namespace is the host, not a process.
        try:
            return os.stat(self.hostfs.path("proc/1/ns/net")).st_ino
        except OSError:
            pass
        try:
            if self.hostfs.read_text("proc/2/comm").strip() == "kthreadd":
                return os.stat(self.hostfs.path("proc/2/ns/net")).st_ino
        except OSError:
            pass
        return None

    def _container_of_pid(self, pid):
        try:
            found = container_from_cgroup(self.hostfs.read_text("proc", pid, "cgroup"))
        except OSError:
            return None
        if found is None:
            return None
        manager, ident = found
        if manager == "docker":
            try:
                config = self.hostfs.read_text("var/lib/docker/containers", ident, "config.v2.json")
                name = docker_name_from_config(config)
            except OSError:
                name = None
            return "docker:" + (name or ident[:12])
        if manager in ("podman", "k8s"):
            return "{0}:{1}".format(manager, ident[:12])
        return "lxc:" + ident
