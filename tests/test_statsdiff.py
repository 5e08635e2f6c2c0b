"""statsdiff.StatsDiff against the plain answer: parse every dump in full and compare.

Dumps are built as the kernel sends them (equal-size RTM_NEWSTATS messages, NLMSG_DONE last)
and cut into buffers at changing places, as the kernel does when it falls back to a one-page
buffer. Between dumps interfaces count packets (in fields the collector reads or not), appear
(at the end, as a new ifindex does, or in the middle), and vanish.
"""

import struct

import pytest
from hypothesis import given, settings, strategies as st

from netdrops_collector.kernel import netlink, statsdiff
from stats_dumps import MESSAGE_SIZE, FakeDump

READ_FIELDS = (0, 1, 6, 7, 14, 15)  # the rtnl_link_stats64 fields the collector reads


def read_counters(stats):
    return tuple(stats[i] for i in READ_FIELDS)


# One step between dumps: which interfaces count, which appear or vanish, where the cuts fall.
step = st.fixed_dictionaries({
    "count": st.lists(st.tuples(st.integers(0, 40), st.integers(0, 24), st.integers(1, 1000)), max_size=6),
    "add_at_end": st.integers(0, 3),
    "add_in_middle": st.booleans(),
    "remove": st.lists(st.integers(0, 40), max_size=2),
    "cuts": st.lists(st.integers(1, 40), max_size=5),
    "done_alone": st.booleans(),
})


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 40), st.lists(step, min_size=1, max_size=8))
def test_changes_equal_a_full_parse_of_every_dump(n_ifaces, steps):
    ifaces = {10 * (i + 1): [0] * 25 for i in range(n_ifaces)}
    diff = statsdiff.StatsDiff()
    changed, vanished = diff.update(FakeDump(ifaces, [7, 19]).recv_chunk)
    assert {k: new for k, old, new in changed} == {k: read_counters(c) for k, c in ifaces.items()}
    assert vanished == []
    for s in steps:
        before = {k: read_counters(c) for k, c in ifaces.items()}
        keys = sorted(ifaces)
        for index, field, amount in s["count"]:
            if keys:
                ifaces[keys[index % len(keys)]][field] += amount
        for index in s["remove"]:
            if keys and len(ifaces) > 1:
                ifaces.pop(keys[index % len(keys)], None)
        top = max(ifaces)
        for n in range(s["add_at_end"]):
            ifaces[top + 10 * (n + 1)] = [n] * 25
        if s["add_in_middle"]:
            ifaces[min(ifaces) + 1] = [7] * 25
        ifaces = dict(sorted(ifaces.items()))  # the kernel dumps by ifindex
        after = {k: read_counters(c) for k, c in ifaces.items()}

        changed, vanished = diff.update(FakeDump(ifaces, s["cuts"], s["done_alone"]).recv_chunk)

        assert len(changed) == len({k for k, _o, _n in changed})
        assert {k: (old, new) for k, old, new in changed} == {
            k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
        assert sorted(vanished) == sorted(set(before) - set(after))


def test_a_dump_that_moved_its_cuts_is_not_parsed_again(monkeypatch):
    """The point of it all: 140 idle interfaces cut at new places cost no parsing."""
    ifaces = {i: [i] * 25 for i in range(1, 141)}
    diff = statsdiff.StatsDiff()
    diff.update(FakeDump(ifaces, [139]).recv_chunk)
    parsed = []
    parse = netlink.parse_stats_buffer

    def counting_parse(buf, out, *args, **kwargs):
        parsed.append(len(buf))
        return parse(buf, out, *args, **kwargs)

    monkeypatch.setattr(netlink, "parse_stats_buffer", counting_parse)
    ifaces[77][0] += 1
    changed, vanished = diff.update(FakeDump(ifaces, [16, 40]).recv_chunk)
    assert [k for k, _o, _n in changed] == [77] and vanished == []
    assert parsed == [MESSAGE_SIZE]  # one message: the one that changed


def test_an_error_in_the_middle_of_a_dump_is_the_kernels_error():
    ifaces = {i: [0] * 25 for i in range(1, 20)}
    diff = statsdiff.StatsDiff()
    diff.update(FakeDump(ifaces, [10]).recv_chunk)
    dump = FakeDump(ifaces, [10])
    error = netlink.NLMSGHDR.pack(MESSAGE_SIZE, netlink.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16)
    error += bytes(MESSAGE_SIZE - len(error))
    at = 3 * MESSAGE_SIZE
    dump.buffers[0] = dump.buffers[0][:at] + error + dump.buffers[0][at + MESSAGE_SIZE:]
    with pytest.raises(netlink.NetlinkError):
        diff.update(dump.recv_chunk)


def test_a_message_that_is_not_stats_is_never_skipped_over():
    """A zero-code NLMSG_ERROR (an ACK) where a busy dump had an interface: the interface is
    gone from this dump, as a full parse says, not silently left at its old counters."""
    ifaces = {i: [0] * 25 for i in range(1, 30)}
    diff = statsdiff.StatsDiff()
    diff.update(FakeDump(ifaces, [10]).recv_chunk)
    for counters in ifaces.values():
        counters[0] += 1
    diff.update(FakeDump(ifaces, [10]).recv_chunk)  # every interface counted: busy from now on
    for counters in ifaces.values():
        counters[0] += 1
    dump = FakeDump(ifaces, [10])
    ack = netlink.NLMSGHDR.pack(MESSAGE_SIZE, netlink.NLMSG_ERROR, 0, 1, 0) + bytes(MESSAGE_SIZE - 16)
    dump.buffers[0] = dump.buffers[0][:-MESSAGE_SIZE] + ack  # in place of interface 10
    changed, vanished = diff.update(dump.recv_chunk)
    assert vanished == [10]
    assert sorted(k for k, _o, _n in changed) == [k for k in ifaces if k != 10]
