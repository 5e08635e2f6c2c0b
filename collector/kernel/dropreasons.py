"""The kernel's drop reasons: parsing the skb:kfree_skb format, and which reasons to count.

Every packet the kernel frees as dropped passes the tracepoint skb:kfree_skb (5.17+) with a
`reason` from enum skb_drop_reason. The names and their numbers change between kernels, so
they are read from the event's format file (its `__print_symbolic` table), never from a table
of numbers here.
"""

import re

SYSTEM, EVENT = "skb", "kfree_skb"
REASON_FIELD = "reason"

# Reasons counted one by one, in the order they get descriptors when the budget is short (the
# rest of all drops is "other"). A reason this kernel does not name is skipped.
COUNTED_REASONS = (
    ("CPU_BACKLOG", "the per-CPU backlog was full: the one netdev_max_backlog changes"),
    ("SOCKET_RCVBUFF", "a socket's receive buffer was full: the application or rmem, not the backlog"),
    ("UNHANDLED_PROTO", "frames of a protocol nothing on the host handles (LLDP, STP, IPv6 off): harmless"),
    ("NO_SOCKET", "no socket for the port: packets to a closed port"),
    ("NETFILTER_DROP", "a firewall rule dropped it"),
    ("TCP_LISTEN_OVERFLOW", "a listener's accept queue was full"),
    ("FULL_RING", "a ring was full (veth's own ring with GRO/XDP, tun)"),
    ("QDISC_DROP", "an egress queueing discipline was full"),
    ("NOMEM", "no memory for the packet"),
    ("PROTO_MEM", "a protocol's memory limit (tcp_mem, udp_mem)"),
    ("OTHERHOST", "frames for another host (a bridge port, promiscuous mode)"),
    ("XDP", "an XDP program dropped it"),
    ("TC_INGRESS", "a tc ingress filter dropped it"),
    ("IP_RPFILTER", "the reverse-path filter (rp_filter) dropped it"),
    ("IPV6DISABLED", "IPv6 packets on an interface with IPv6 off"),
    ("SOCKET_BACKLOG", "a busy socket's backlog was full"),
)
COUNTED_NAMES = tuple(name for name, _why in COUNTED_REASONS)
OTHER = "other"  # the dimension for every reason not counted one by one

_SYMBOLIC = re.compile(r"__print_symbolic\(\s*REC->" + REASON_FIELD + r"\s*,(.*)\)", re.S)
_PAIR = re.compile(r"\{\s*([^,{}]+?)\s*,\s*\"([A-Za-z0-9_]+)\"\s*\}")
_FIELD = re.compile(r"field:[^;]*?\b(\w+)(?:\[\d*\])?;")


class FormatError(ValueError):
    pass


def parse_format(text):
    """{reason number: NAME} from the format file of skb:kfree_skb. FormatError when the event has
    no reason field (before 5.17) or its names cannot be read."""
    fields = set(_FIELD.findall(text))
    if REASON_FIELD not in fields:
        raise FormatError("skb:kfree_skb has no reason field (kernels before 5.17 do not give drop reasons)")
    match = _SYMBOLIC.search(text)
    if match is None:
        raise FormatError("skb:kfree_skb's format does not name its reasons")
    reasons = {}
    for value, name in _PAIR.findall(match.group(1)):
        try:
            reasons[int(value, 0)] = name
        except ValueError:
            continue  # a symbol the kernel left unresolved cannot be filtered on
    if not reasons:
        raise FormatError("skb:kfree_skb's format names no reason by number")
    return reasons


def dimension_name(name):
    """A reason as charts and metrics show it: the kernel's name lowercased."""
    return name.lower()


def filter_for(number):
    """The in-kernel filter that counts one reason."""
    return "{0} == {1}".format(REASON_FIELD, int(number))


def plan(numbers_by_name, cpus, fd_budget):
    """The reasons to count one by one: COUNTED_REASONS this kernel names, as many as fit
    `cpus` x (1 + reasons) descriptors into `fd_budget` (the 1 is the total). None when not even
    the totals fit."""
    if cpus < 1 or cpus > fd_budget:
        return None
    fit = fd_budget // cpus - 1
    named = [name for name in COUNTED_NAMES if name in numbers_by_name]
    return tuple(named[:max(0, fit)])
