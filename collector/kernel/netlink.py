"""A minimal rtnetlink client: one RTM_GETSTATS dump per tick, RTM_GETLINK when interfaces change.

Only the standard library (socket, struct). Parsing is split from the socket: the parse_*
functions take the raw bytes the kernel sent, so tests and fuzzers feed them directly.
"""

import errno
import os
import select
import socket
import struct

from ..errors import ParseError

NETLINK_ROUTE = 0
RTMGRP_LINK = 1

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWNSID = 88
RTM_GETNSID = 90
RTM_NEWSTATS = 92
RTM_GETSTATS = 94

IFLA_IFNAME = 3
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NUM_RX_QUEUES = 32
IFLA_LINK_NETNSID = 37
IFLA_PARENT_DEV_NAME = 56
IFLA_INFO_KIND = 1
IFLA_INFO_SLAVE_KIND = 4
IFLA_STATS_LINK_64 = 1
NETNSA_NSID = 1
NETNSA_FD = 3
NLA_TYPE_MASK = 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER

NLMSGHDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
IF_STATS_MSG = struct.Struct("=BxHII")
RTATTR = struct.Struct("=HH")

# nlmsghdr(16) + if_stats_msg(12) + rtattr(4), then rtnl_link_stats64 from offset 32. We read
# rx_packets, tx_packets (fields 0-1), rx_dropped, tx_dropped (6-7), rx_fifo_errors and
# rx_missed_errors (14-15) in one unpack; the rest of the struct is skipped.
STATS_MSG = struct.Struct("=IH14xI4xHHQQ32xQQ48xQQ")
STATS_MIN_LEN = STATS_MSG.size


def align4(n):
    return (n + 3) & ~3


def build_request(msg_type, payload, seq, flags=NLM_F_REQUEST | NLM_F_DUMP):
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


class NetlinkError(OSError):
    pass


def split_messages(buf, source="netlink"):
    """Yield (type, flags, offset, length) for each netlink message in one received buffer."""
    off, end = 0, len(buf)
    while off + NLMSGHDR.size <= end:
        length, mtype, flags, _seq, _pid = NLMSGHDR.unpack_from(buf, off)
        if length < NLMSGHDR.size or off + length > end:
            raise ParseError(source, "truncated message (length {0} at offset {1})".format(length, off))
        yield mtype, flags, off, length
        off += align4(length)
    if off < end:
        raise ParseError(source, "truncated message header at offset {0}".format(off))


def check_error(buf, off, source="netlink"):
    """An NLMSG_ERROR carries a negative errno (0 is an ACK)."""
    if off + 20 > len(buf):
        raise ParseError(source, "truncated error message")
    (code,) = struct.unpack_from("=i", buf, off + 16)
    if code:
        raise NetlinkError(-code, os.strerror(-code))


def parse_stats_buffer(buf, out, source="netlink RTM_GETSTATS", layout=None):
    """Parse one received buffer of RTM_NEWSTATS messages into `out` {ifindex: stats tuple}.

    The tuple is (rx_packets, tx_packets, rx_dropped, tx_dropped, rx_fifo_errors,
    rx_missed_errors). Returns True when the dump's NLMSG_DONE was seen. A `layout` list gets
    (ifindex, length) of each stats message, (None, length) of any other but NLMSG_DONE.
    """
    off, end = 0, len(buf)
    unpack = STATS_MSG.unpack_from
    while off + NLMSGHDR.size <= end:
        length, mtype = struct.unpack_from("=IH", buf, off)
        if length < NLMSGHDR.size or off + length > end:
            raise ParseError(source, "truncated message (length {0} at offset {1})".format(length, off))
        if mtype == RTM_NEWSTATS:
            if length < STATS_MIN_LEN:
                raise ParseError(source, "stats message of {0} bytes is too short".format(length))
            _l, _t, ifindex, _alen, atype, rxp, txp, rxd, txd, fifo, missed = unpack(buf, off)
            if atype & NLA_TYPE_MASK != IFLA_STATS_LINK_64:
                raise ParseError(source, "unexpected attribute {0} for ifindex {1}".format(atype, ifindex))
            out[ifindex] = (rxp, txp, rxd, txd, fifo, missed)
            if layout is not None:
                layout.append((ifindex, length))
        elif mtype == NLMSG_DONE:
            return True
        else:
            if mtype == NLMSG_ERROR:
                check_error(buf, off, source)
            if layout is not None:
                layout.append((None, length))
        off += (length + 3) & ~3
    if off < end:
        raise ParseError(source, "truncated message header at offset {0}".format(off))
    return False


def iter_attrs(buf, off, end):
    while off + RTATTR.size <= end:
        alen, atype = RTATTR.unpack_from(buf, off)
        if alen < RTATTR.size or off + alen > end:
            break
        yield atype & NLA_TYPE_MASK, off + RTATTR.size, off + alen
        off += align4(alen)


def _cstr(buf, start, stop):
    return bytes(buf[start:stop]).split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(buf, start, stop):
    if stop - start < 4:
        return None
    return struct.unpack_from("=I", buf, start)[0]


def _s32(buf, start, stop):
    if stop - start < 4:
        return None
    return struct.unpack_from("=i", buf, start)[0]


# The link attributes the collector reads: attribute type -> (key, decoder).
LINK_ATTRS = {
    IFLA_IFNAME: ("name", _cstr),
    IFLA_LINK: ("link", _u32),
    IFLA_MASTER: ("master", _u32),
    IFLA_LINK_NETNSID: ("link_netnsid", _s32),
    IFLA_PARENT_DEV_NAME: ("parent_dev", _cstr),
    IFLA_NUM_RX_QUEUES: ("rx_queues", _u32),
}


def parse_link_message(buf, off, length):
    """One RTM_NEWLINK/RTM_DELLINK message -> dict of the attributes the collector uses."""
    body = off + NLMSGHDR.size
    if length < NLMSGHDR.size + IFINFOMSG.size:
        raise ParseError("netlink RTM_GETLINK", "link message of {0} bytes is too short".format(length))
    _family, arphrd, ifindex, flags, _change = IFINFOMSG.unpack_from(buf, body)
    link = {"ifindex": ifindex, "arphrd": arphrd, "flags": flags, "name": None, "kind": None,
            "slave_kind": None, "link": None, "master": None, "link_netnsid": None,
            "parent_dev": None, "rx_queues": None}
    for atype, start, stop in iter_attrs(buf, body + IFINFOMSG.size, off + length):
        field = LINK_ATTRS.get(atype)
        if field is not None:
            link[field[0]] = field[1](buf, start, stop)
        if atype == IFLA_LINKINFO:
            for itype, istart, istop in iter_attrs(buf, start, stop):
                if itype == IFLA_INFO_KIND:
                    link["kind"] = _cstr(buf, istart, istop)
                elif itype == IFLA_INFO_SLAVE_KIND:
                    link["slave_kind"] = _cstr(buf, istart, istop)
    return link


def parse_link_buffer(buf, out_new, out_deleted, source="netlink RTM_GETLINK"):
    """Parse a buffer of link messages; new/changed links go to out_new, deleted indexes to
    out_deleted. Returns True when NLMSG_DONE was seen."""
    for mtype, _flags, off, length in split_messages(buf, source):
        if mtype == RTM_NEWLINK:
            out_new.append(parse_link_message(buf, off, length))
        elif mtype == RTM_DELLINK:
            if length >= NLMSGHDR.size + IFINFOMSG.size:
                out_deleted.append(IFINFOMSG.unpack_from(buf, off + NLMSGHDR.size)[2])
        elif mtype == NLMSG_DONE:
            return True
        elif mtype == NLMSG_ERROR:
            check_error(buf, off, source)
    return False


class RtNetlink:
    """A NETLINK_ROUTE socket for dumps, and optionally one subscribed to link events."""

    RECV_SIZE = 1 << 16

    def __init__(self, subscribe_links=False):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0
        self.buf = bytearray(self.RECV_SIZE)
        self.view = memoryview(self.buf)
        self.events = None
        if subscribe_links:
            self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            self.events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.events.bind((0, RTMGRP_LINK))
            self.events.setblocking(False)
            # Asked every tick and almost always empty: a poll is cheaper than a failing recv.
            self.events_poll = select.poll()
            self.events_poll.register(self.events, select.POLLIN)

    def close(self):
        self.sock.close()
        if self.events is not None:
            self.events.close()

    def _dump(self, msg_type, payload, parse_buffer):
        self.seq += 1
        self.sock.send(build_request(msg_type, payload, self.seq))
        while True:
            n = self.sock.recv_into(self.buf)
            if parse_buffer(self.view[:n]):
                return

    # Stats dumps always carry this sequence number, so an unchanged stretch of interfaces comes
    # back byte for byte identical and the caller can skip parsing it (see statsdiff.StatsDiff).
    STATS_SEQ = 1

    STATS_REQUEST = build_request(RTM_GETSTATS, IF_STATS_MSG.pack(socket.AF_UNSPEC, 0, 0, 1 << (IFLA_STATS_LINK_64 - 1)),
                                  STATS_SEQ)

    def request_stats(self):
        """Start an RTM_GETSTATS dump (64-bit link stats only); read it with recv_chunk()."""
        self.sock.send(self.STATS_REQUEST)

    def recv_chunk(self, same_as=None):
        """The next buffer of a dump, as bytes; `same_as` itself when the buffer is byte for byte
        that. Not copying an unchanged buffer is not about the copy: 256 KiB of buffers made and
        freed each tick (1,000 interfaces) make glibc give the memory back and fault it in again
        on the next tick, which cost more than the rest of the diff."""
        n = self.sock.recv_into(self.buf)
        if same_as is not None and n == len(same_as) and self.buf.startswith(same_as):
            return same_as
        return bytes(self.view[:n])

    def dump_stats(self, out=None):
        """{ifindex: (rx_packets, tx_packets, rx_dropped, tx_dropped, rx_fifo, rx_missed)}."""
        out = {} if out is None else out
        self.request_stats()
        while not parse_stats_buffer(self.recv_chunk(), out):
            pass
        return out

    def dump_links(self):
        links, deleted = [], []
        payload = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self._dump(RTM_GETLINK, payload, lambda b: parse_link_buffer(b, links, deleted))
        return links

    def get_link(self, ifindex):
        """One interface's attributes, or None when it has vanished."""
        self.seq += 1
        payload = IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0)
        self.sock.send(build_request(RTM_GETLINK, payload, self.seq, NLM_F_REQUEST))
        n = self.sock.recv_into(self.buf)
        links, deleted = [], []
        try:
            parse_link_buffer(self.view[:n], links, deleted)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return links[0] if links else None

    def get_nsid(self, netns_fd):
        """The id this namespace gives another namespace (opened as netns_fd), or None when it
        has none: the id veths report as IFLA_LINK_NETNSID for a peer living there."""
        self.seq += 1
        payload = struct.pack("=Bxxx", socket.AF_UNSPEC) + RTATTR.pack(8, NETNSA_FD) + struct.pack("=I", netns_fd)
        self.sock.send(build_request(RTM_GETNSID, payload, self.seq, NLM_F_REQUEST))
        buf = self.recv_chunk()
        for mtype, _flags, off, length in split_messages(buf, "netlink RTM_GETNSID"):
            if mtype == NLMSG_ERROR:
                check_error(buf, off)
            elif mtype == RTM_NEWNSID:
                for atype, start, stop in iter_attrs(buf, off + NLMSGHDR.size + 4, off + length):
                    if atype == NETNSA_NSID:
                        nsid = _s32(buf, start, stop)
                        return nsid if nsid is not None and nsid >= 0 else None
        return None

    def drain_link_events(self):
        """Link changes since the last call: (new_or_changed, deleted_indexes, overflowed).

        `overflowed` means the kernel dropped events (ENOBUFS): the caller must re-dump."""
        links, deleted, overflowed = [], [], False
        if self.events is None or not self.events_poll.poll(0):  # POLLERR shows an overflow too
            return links, deleted, False
        while True:
            try:
                n = self.events.recv_into(self.buf)
            except BlockingIOError:
                return links, deleted, overflowed
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # Read on to the end: what is still queued predates the caller's re-dump
                    # and, applied after it, would bring back links that are gone.
                    overflowed = True
                    continue
                raise
            parse_link_buffer(self.view[:n], links, deleted, "netlink link event")
