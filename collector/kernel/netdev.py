"""/proc/net/dev: the fallback interface counters when rtnetlink is not available.

The kernel prints rx "drop" as rx_dropped + rx_missed_errors, so the fallback cannot tell the
two apart: it reports the sum as rx_dropped and missed as 0.
"""

from ..errors import ParseError

NETDEV_PATH = "proc/net/dev"


def parse_netdev(text, source=NETDEV_PATH):
    """Text -> {name: (rx_packets, tx_packets, rx_dropped, tx_dropped, rx_fifo, rx_missed)}."""
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if "|" in line or not line.strip():
            continue  # the two header lines
        name, sep, rest = line.rpartition(":")
        if not sep:
            raise ParseError(source, "no ':' after the interface name", lineno)
        fields = rest.split()
        if len(fields) != 16:
            raise ParseError(source, "{0} counters, expected 16".format(len(fields)), lineno)
        try:
            v = [int(f) for f in fields]
        except ValueError:
            raise ParseError(source, "counter is not a number", lineno)
        # rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
        out[name.strip()] = (v[1], v[9], v[3], v[11], v[4], 0)
    return out


def read_netdev(hostfs):
    return parse_netdev(hostfs.read_text(NETDEV_PATH), hostfs.path(NETDEV_PATH))
