"""RTM_GETSTATS dumps as the kernel sends them, for tests and benches that feed the parsers.

A dump is a stream of equal-size RTM_NEWSTATS messages (64-bit link stats) cut into buffers,
NLMSG_DONE last. Standard library only: bench/ uses it too.
"""

import struct

from netdrops_collector.kernel import netlink

DONE = netlink.NLMSGHDR.pack(20, netlink.NLMSG_DONE, 2, 1, 0) + b"\0" * 4


def stats_message(ifindex, counters):
    """One RTM_NEWSTATS message; `counters` are the 25 u64 fields of rtnl_link_stats64."""
    stats = struct.pack("=25Q", *counters)
    attr = struct.pack("=HH", 4 + len(stats), netlink.IFLA_STATS_LINK_64) + stats
    body = netlink.IF_STATS_MSG.pack(0, 0, ifindex, 1) + attr
    return netlink.NLMSGHDR.pack(16 + len(body), netlink.RTM_NEWSTATS, 2, 1, 0) + body


MESSAGE_SIZE = len(stats_message(1, [0] * 25))


class FakeDump:
    """One dump of {ifindex: counters}, cut after the message numbers in `cuts`, handed out one
    buffer per recv like RtNetlink.recv_chunk."""

    def __init__(self, ifaces, cuts, done_alone=False):
        stream = b"".join(stats_message(i, c) for i, c in ifaces.items())
        bounds = sorted({min(c, len(ifaces)) * MESSAGE_SIZE for c in cuts} | {0, len(stream)})
        self.buffers = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
        if done_alone or not self.buffers:
            self.buffers.append(DONE)
        else:
            self.buffers[-1] += DONE

    def recv_chunk(self, same_as=None):
        raw = self.buffers.pop(0)
        return same_as if raw == same_as else raw
