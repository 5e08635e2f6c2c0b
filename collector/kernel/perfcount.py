"""Counting a tracepoint in the kernel with perf_event_open: no BPF, no per-packet user work.

One group per CPU: the leader counts every hit, each member one filtered subset (a filter such
as `reason == 71`, set with PERF_EVENT_IOC_SET_FILTER). Reading the leader with
PERF_FORMAT_GROUP returns the whole group's counts in one read(). Opening needs CAP_PERFMON
or root; reading a descriptor someone opened needs nothing, which is what lets a root helper
open them and an unprivileged plugin read them.
"""

import ctypes
import errno
import fcntl
import os
import platform
import struct

PERF_TYPE_TRACEPOINT = 2
PERF_FORMAT_GROUP = 1 << 3
PERF_FLAG_FD_CLOEXEC = 1 << 3
ATTR_DISABLED = 1 << 0  # perf_event_attr flags bit 0
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_FILTER = 0x40082406  # _IOW('$', 6, char *)

# __NR_perf_event_open by machine (asm-generic numbering for the newer ports).
SYSCALL_NUMBERS = {
    "x86_64": 298, "i386": 336, "i686": 336, "aarch64": 241, "arm64": 241, "riscv64": 241,
    "loongarch64": 241, "armv7l": 364, "armv6l": 364, "ppc64le": 319, "ppc64": 319, "s390x": 331,
}


class PerfAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER0 (64 bytes), which every kernel takes."""
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64)]


_syscall = None


def _perf_event_open(attr, cpu, group_fd):
    global _syscall
    number = SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, "perf_event_open: unknown syscall number on " + platform.machine())
    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
    fd = _syscall(ctypes.c_long(number), ctypes.byref(attr), ctypes.c_int(-1), ctypes.c_int(cpu),
                  ctypes.c_int(group_fd), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, "perf_event_open: " + os.strerror(code))
    return fd


def _open_one(tracepoint_id, cpu, group_fd, leader):
    attr = PerfAttr()
    attr.type = PERF_TYPE_TRACEPOINT
    attr.size = ctypes.sizeof(PerfAttr)
    attr.config = tracepoint_id
    attr.sample_period = 0  # counting, never sampling: nothing is written per hit
    if leader:
        attr.read_format = PERF_FORMAT_GROUP
        attr.flags = ATTR_DISABLED  # enabled once every member has its filter
    return _perf_event_open(attr, cpu, group_fd)


def set_filter(fd, expression):
    fcntl.ioctl(fd, PERF_EVENT_IOC_SET_FILTER, expression.encode("ascii") + b"\0")


def open_group(tracepoint_id, cpu, member_filters):
    """[leader fd, member fds...] counting `tracepoint_id` on `cpu`: the leader all hits, each
    member the hits its filter passes. All or nothing: on an error nothing stays open."""
    fds = []
    try:
        fds.append(_open_one(tracepoint_id, cpu, -1, leader=True))
        for expression in member_filters:
            fd = _open_one(tracepoint_id, cpu, fds[0], leader=False)
            fds.append(fd)
            set_filter(fd, expression)
        fcntl.ioctl(fds[0], PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        close_all(fds)
        raise
    return fds


def close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def group_reader(size):
    """A function reading a group leader of `size` events: (all hits, member counts...)."""
    length = 8 * (size + 1)
    layout = struct.Struct("={0}Q".format(size + 1))

    def read(fd):
        data = os.read(fd, length)
        if len(data) != length:
            raise OSError(errno.EIO, "perf group read returned {0} bytes, not {1}".format(len(data), length))
        return layout.unpack(data)[1:]  # the first word is the number of events
    return read
