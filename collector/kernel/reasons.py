"""Drop reasons counted in the kernel: the counters, opened here (as root) or received from the
root helper (collector/reasons_helper.py) over a unix socket, and read once per tick.

The kernel counts; a tick reads one group per CPU (one read() each) and sums. Descriptors are
bounded: CPUs x (1 + reasons) never passes MAX_COUNTER_FDS nor half the process's open-file
limit; when short, the reasons at the end of dropreasons.COUNTED_REASONS go into "other" first,
and when not even one per CPU fits, reasons are not counted (said once, in the log).
"""

import json
import os
import resource
import socket

from . import dropreasons, perfcount, tracefs
from .softnet import parse_cpu_list

MAX_COUNTER_FDS = 4096
DEFAULT_SOCKET = "/run/netdrops/reasons.sock"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 65536
HELPER_TIMEOUT = 5.0   # seconds a helper may take to answer, so a hung one cannot stop a tick

ENABLE_HINT = ("run `netdrops-collector install` as root (it sets up the netdrops-reasons helper), "
               "or start `netdrops-collector reasons-helper --listen {0}` as root")


class ReasonsUnavailable(Exception):
    """Reasons cannot be counted here; the message says why and how to enable them."""


class ReasonCounters:
    """Per-CPU groups: leader = every drop, members = one reason each, in `names` order."""

    def __init__(self, names, groups, origin):
        self.names = tuple(names)     # kernel names counted one by one
        self.groups = groups          # [(cpu, [leader fd, member fds...])]
        self.origin = origin          # "kernel" (opened here) or the helper's socket path
        self._read = perfcount.group_reader(len(self.names) + 1)
        self.dim_names = tuple(dropreasons.dimension_name(n) for n in self.names)

    @property
    def fds(self):
        return sum(len(fds) for _cpu, fds in self.groups)

    def read(self):
        """{reason dimension name: drops since opened} with "other" = all drops - the named ones."""
        sums = [0] * (len(self.names) + 1)
        read = self._read
        for _cpu, fds in self.groups:
            for i, value in enumerate(read(fds[0])):
                sums[i] += value
        counts = dict(zip(self.dim_names, sums[1:]))
        counts[dropreasons.OTHER] = sums[0] - sum(sums[1:])
        return counts

    def close(self):
        for _cpu, fds in self.groups:
            perfcount.close_all(fds)
        self.groups = []


def fd_budget(requested=None):
    """Descriptors the counters may take in this process."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = MAX_COUNTER_FDS if soft == resource.RLIM_INFINITY else min(MAX_COUNTER_FDS, soft // 2)
    return budget if requested is None else max(0, min(budget, requested))


def online_cpus(path="/sys/devices/system/cpu/online"):
    with open(path) as f:
        return sorted(parse_cpu_list(f.read().strip()))


def reason_numbers(root=None):
    """{NAME: number} from this kernel's skb:kfree_skb format, and its tracepoint id."""
    root = root or tracefs.find_root()
    if root is None:
        raise ReasonsUnavailable("tracefs is not mounted: as root, mount -t tracefs nodev "
                                 + tracefs.DEFAULT_MOUNT)
    try:
        event_id, text = tracefs.read_event(root, dropreasons.SYSTEM, dropreasons.EVENT)
    except PermissionError:
        raise ReasonsUnavailable("tracefs at {0} is readable by root only".format(root))
    except (OSError, ValueError) as error:
        raise ReasonsUnavailable("this kernel has no skb:kfree_skb tracepoint under {0} ({1})".format(
            root, getattr(error, "strerror", None) or error))
    try:
        numbers = dropreasons.parse_format(text)
    except dropreasons.FormatError as error:
        raise ReasonsUnavailable(str(error))
    return event_id, {name: number for number, name in numbers.items()}


def open_groups(max_fds=None, root=None):
    """Open the counters here (needs CAP_PERFMON or root): (names, [(cpu, fds)])."""
    event_id, by_name = reason_numbers(root)
    cpus = online_cpus()
    names = dropreasons.plan(by_name, len(cpus), fd_budget(max_fds))
    if names is None:
        raise ReasonsUnavailable("{0} CPUs need {0} descriptors even for the total, more than the {1} "
                                 "allowed (half the open-file limit, at most {2})".format(
                                     len(cpus), fd_budget(max_fds), MAX_COUNTER_FDS))
    filters = [dropreasons.filter_for(by_name[n]) for n in names]
    groups = []
    try:
        for cpu in cpus:
            groups.append((cpu, perfcount.open_group(event_id, cpu, filters)))
    except OSError as error:
        for _cpu, fds in groups:
            perfcount.close_all(fds)
        if error.errno in (1, 13):  # EPERM, EACCES
            raise ReasonsUnavailable("perf_event_open was refused (needs root or CAP_PERFMON; "
                                     "kernel.perf_event_paranoid decides for others)")
        raise ReasonsUnavailable("perf_event_open failed on CPU {0}: {1}".format(
            cpu, error.strerror or error))
    return names, groups


def open_local(max_fds=None, root=None):
    names, groups = open_groups(max_fds, root)
    return ReasonCounters(names, groups, "kernel")


# -- the helper's protocol: SOCK_SEQPACKET, JSON messages, descriptors as SCM_RIGHTS -------------
# client -> {"v": 1, "max_fds": N}
# helper -> {"v": 1, "reasons": [NAME, ...], "cpus": N}, then per CPU {"cpu": c} with its group's
#           descriptors (leader first), then {"end": true}; or at any point {"error": "sentence"}.

def encode(message):
    return json.dumps(message, separators=(",", ":")).encode()


def decode(data):
    try:
        message = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise ReasonsUnavailable("the reasons helper answered something that is not JSON")
    if not isinstance(message, dict):
        raise ReasonsUnavailable("the reasons helper answered something that is not a JSON object")
    if "error" in message:
        raise ReasonsUnavailable("the reasons helper refused: {0}".format(message["error"]))
    return message


def from_helper(path=DEFAULT_SOCKET, max_fds=None, timeout=HELPER_TIMEOUT):
    """Counters opened by the root helper listening on `path` and passed to this process."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(timeout)
    groups = []
    counters = None
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ReasonsUnavailable("no reasons helper at {0}: {1}".format(path, ENABLE_HINT.format(path)))
        except PermissionError:
            raise ReasonsUnavailable("{0} refused this user (it is for the netdata group)".format(path))
        sock.sendall(encode({"v": PROTOCOL_VERSION, "max_fds": fd_budget(max_fds)}))
        header = decode(_receive(sock, 0)[0])
        names = header.get("reasons")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ReasonsUnavailable("the reasons helper sent no list of reasons")
        size = len(names) + 1  # a group's descriptors: the leader, then one per reason
        while True:
            data, fds = _receive(sock, size)
            groups.append((None, fds))  # closed on any failure below
            message = decode(data)
            if message.get("end"):
                break
            if len(fds) != size or not isinstance(message.get("cpu"), int):
                raise ReasonsUnavailable("the reasons helper sent {0} descriptors for a group of {1}".format(
                    len(fds), size))
            groups[-1] = (message["cpu"], fds)
        groups.pop()  # the end message's (no descriptors)
        if not groups:
            raise ReasonsUnavailable("the reasons helper sent no counters")
        counters = ReasonCounters(names, groups, path)
        return counters
    except socket.timeout:
        raise ReasonsUnavailable("the reasons helper at {0} did not answer in {1:g} s".format(path, timeout))
    except OSError as error:
        raise ReasonsUnavailable("cannot use the reasons helper at {0}: {1}; {2}".format(
            path, error.strerror or error, ENABLE_HINT.format(path)))
    finally:
        sock.close()
        if counters is None:
            for _cpu, fds in groups:
                perfcount.close_all(fds)


def _receive(sock, max_fds):
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, max(1, max_fds))
    if not data and not fds:
        perfcount.close_all(fds)
        raise ReasonsUnavailable("the reasons helper closed the connection early")
    return data, fds


def open_counters(socket_path=DEFAULT_SOCKET):
    """Counters for this process: opened here when it may (root), else from the helper."""
    if os.geteuid() == 0:
        return open_local()
    return from_helper(socket_path)
