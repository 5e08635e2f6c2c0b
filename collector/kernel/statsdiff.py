"""Successive rtnetlink stats dumps -> the interfaces whose counters changed, parsing little.

On a host with thousands of veths most interfaces count nothing in a second, so most of a dump
is byte for byte what it was a tick ago. A dump is a stream of equal-size RTM_NEWSTATS messages
(one filter, one struct size) ending with NLMSG_DONE, cut into buffers of about 140 messages,
but not always at the same places: the kernel falls back to a one-page buffer when a 32 KiB
allocation fails, which moves every later cut. So each buffer is compared with the previous dump
at the same offset in the *stream*; where they differ, halves are compared down to single
messages (all at memcmp speed), and only the differing messages are parsed. On a busy host,
where more than one message in eight differed last time, a buffer that differs is parsed whole.

What does not fit that picture (an interface removed or added in the middle, messages of mixed
sizes, an error) is parsed in full, exactly as the first dump is.
"""

import struct

from . import netlink
from ..errors import ParseError

DONE_LEN = netlink.NLMSGHDR.size + 4  # the dump's final NLMSG_DONE carries one errno
DONE_PREFIX = struct.pack("=IH", DONE_LEN, netlink.NLMSG_DONE)
ERRNO = struct.Struct("=i")


class LayoutChanged(Exception):
    """The dump no longer lines up with the previous one: parse it in full."""


class StatsDiff:
    """Turns successive stats dumps into (changed, vanished).

    changed: [(ifindex, old counters or None, new counters)]; vanished: [ifindex]. Counters are
    the tuples netlink.parse_stats_buffer gives.
    """

    def __init__(self):
        self.current = {}      # ifindex -> counters, as of the last dump
        self.msg_size = None   # size of every message of the last dump; None: not uniform
        self.slots = []        # ifindex of each message of the last dump, in stream order
        self.chunks = {}       # stream offset -> (buffer, length of its stats messages)
        self.stream = None     # the last dump's stats messages joined, made when cuts moved
        self.differing = 0     # messages that differed from the last dump, in this dump
        self.busy = False      # more than 1 in 8 did last time

    def update(self, recv_chunk):
        received = []
        if self.msg_size is not None:
            try:
                return self._update_aligned(recv_chunk, received)
            except LayoutChanged:
                pass  # `received` holds what came so far; the rest is still in the socket
        return self._update_full(recv_chunk, received)

    # -- the usual tick: same interfaces, in the same order --------------------------------

    def _update_aligned(self, recv_chunk, received):
        updates = []      # (ifindex, counters), applied only once the whole dump lined up
        added = []        # ifindex of messages past the end of the last dump
        old_chunks, chunks = self.chunks, {}
        pos = 0
        done = False
        self.differing = 0
        while not done:
            kept = old_chunks.get(pos)
            raw = recv_chunk(None if kept is None else kept[0])
            received.append(raw)
            if kept is not None and raw is kept[0]:
                # The usual case: the same interfaces, counting nothing, cut at the same place.
                chunks[pos] = kept
                area = kept[1]
                done = area != len(raw)  # only the last buffer holds more than stats
            else:
                area, done = self._stats_area(raw)
                self._diff_chunk(raw, pos, area, updates, added)
                chunks[pos] = (raw, area)
            pos += area
        if pos < len(self.slots) * self.msg_size:
            raise LayoutChanged()  # an interface went away: every later message moved
        current = self.current
        changed = [(key, current.get(key), counters) for key, counters in updates if current.get(key) != counters]
        current.update(updates)
        self.slots.extend(added)
        self._keep(chunks)
        self.busy = self.differing * 8 > len(self.slots)
        return changed, []

    def _stats_area(self, raw):
        """(bytes of stats messages, whether the buffer ends the dump) of one buffer."""
        n, size = len(raw), self.msg_size
        if n % size == 0:
            return n, False
        if n >= DONE_LEN and (n - DONE_LEN) % size == 0 and raw[n - DONE_LEN:n - DONE_LEN + 6] == DONE_PREFIX:
            (code,) = ERRNO.unpack_from(raw, n - 4)
            if code:
                raise LayoutChanged()  # the full parse raises the kernel's error
            return n - DONE_LEN, True
        raise LayoutChanged()

    def _old_bytes(self, pos, area):
        """The last dump's stats bytes from stream offset `pos`, as long as this buffer's."""
        kept = self.chunks.get(pos)
        if kept is not None and kept[1] == area:
            return kept[0]
        if self.stream is None:
            self.stream = b"".join(chunk[:a] for _pos, (chunk, a) in sorted(self.chunks.items()))
        return self.stream[pos:pos + area]

    def _diff_chunk(self, raw, pos, area, updates, added):
        size = self.msg_size
        if self.busy:
            # Most interfaces counted something last time: parsing the whole buffer is cheaper
            # than finding the messages that differ (4x cheaper when all of them do).
            parsed = self._parse_area(raw, area)
            self._check_slots(pos // size, list(parsed), added)
            self.differing += len(parsed)
            counters = parsed.items()
        else:
            old = self._old_bytes(pos, area)
            common = min(area, len(old)) // size * size
            offsets = []
            _differing_messages(raw, old, 0, common, size, offsets)
            offsets.extend(range(common, area, size))  # past the end of the last dump
            counters = [self._parse_message(raw, off) for off in offsets]
            for off, (key, _counters) in zip(offsets, counters):
                self._check_slots((pos + off) // size, [key], added)
            self.differing += len(offsets)
        updates.extend(counters)

    def _check_slots(self, first, keys, added):
        """Raise LayoutChanged unless `keys`, from message number `first` on, are the interfaces
        the last dump had there, or new ones past its end (which go to `added`)."""
        known = max(0, min(len(keys), len(self.slots) - first))
        if keys[:known] != self.slots[first:first + known]:
            raise LayoutChanged()  # an interface appeared or went away before these
        for key in keys[known:]:
            if key in self.current:
                raise LayoutChanged()
            added.append(key)

    def _parse_area(self, raw, area):
        """{ifindex: counters} of every message of a buffer's stats area, in order."""
        out = {}
        try:
            netlink.parse_stats_buffer(memoryview(raw)[:area], out)
        except (ParseError, netlink.NetlinkError):
            raise LayoutChanged()  # the full parse names the problem
        if len(out) != area // self.msg_size:
            raise LayoutChanged()  # not all stats messages (sizes are checked where they differ)
        return out

    def _parse_message(self, raw, off):
        out = {}
        try:
            netlink.parse_stats_buffer(raw[off:off + self.msg_size], out)
        except (ParseError, netlink.NetlinkError):
            raise LayoutChanged()  # the full parse names the problem
        if len(out) != 1:
            raise LayoutChanged()
        return out.popitem()

    # -- the first dump, and any dump that does not line up --------------------------------

    def _update_full(self, recv_chunk, received):
        counters, layout = {}, []
        done = False
        for raw in received:
            done = netlink.parse_stats_buffer(raw, counters, layout=layout)
        while not done:
            raw = recv_chunk()
            received.append(raw)
            done = netlink.parse_stats_buffer(raw, counters, layout=layout)
        current = self.current
        changed = [(k, current.get(k), c) for k, c in counters.items() if current.get(k) != c]
        vanished = [k for k in current if k not in counters]
        self.current = counters
        self._learn_layout(received, layout)
        return changed, vanished

    def _learn_layout(self, received, layout):
        """Remember the dump's cuts when all its messages are stats of one size, else nothing."""
        sizes = {length for _key, length in layout}
        self.msg_size = self.slots = None
        self.chunks, self.stream = {}, None
        if len(sizes) != 1 or None in (key for key, _length in layout):
            return
        size = sizes.pop()
        if size % 4 or sum(map(len, received)) != size * len(layout) + DONE_LEN:
            return  # padding, or more than one message after the stats
        chunks, pos = {}, 0
        for raw in received:
            area = len(raw) if len(raw) % size == 0 else len(raw) - DONE_LEN
            chunks[pos] = (raw, area)
            pos += area
        self.msg_size = size
        self.slots = [key for key, _length in layout]
        self._keep(chunks)

    def _keep(self, chunks):
        self.chunks = chunks
        self.stream = None


def _differing_messages(new, old, lo, hi, size, out):
    """Offsets of the messages in [lo, hi) whose bytes differ, by halving: a buffer where one
    interface of 140 counted something costs about 16 comparisons, not 140."""
    if new[lo:hi] == old[lo:hi]:
        return
    if hi - lo == size:
        out.append(lo)
        return
    mid = lo + (hi - lo) // (2 * size) * size
    _differing_messages(new, old, lo, mid, size, out)
    _differing_messages(new, old, mid, hi, size, out)
