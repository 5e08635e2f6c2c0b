"""/proc/net/snmp and /proc/net/netstat: socket-level receive drops.

Both files are pairs of lines, a header line of names and a value line, each starting with the
protocol ('Udp:', 'TcpExt:'). UDP RcvbufErrors are socket-buffer drops, which a larger backlog
does not fix; TCP ListenOverflows/ListenDrops are accept-queue drops.
"""

from .errors import ParseError

SNMP_PATH = "proc/net/snmp"
NETSTAT_PATH = "proc/net/netstat"


def parse_snmp_pairs(text, source, protocols=None):
    """Text -> {protocol: {name: int}}, for every protocol or only those named (the files are
    read every tick, and TcpExt alone has over a hundred counters)."""
    tables = {}
    pending = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        proto, sep, rest = line.partition(":")
        if not sep:
            if line.strip():
                raise ParseError(source, "no protocol prefix", lineno)
            continue
        if protocols is not None and proto not in protocols:
            continue
        fields = rest.split()
        if proto not in pending:
            pending[proto] = fields
            continue
        names = pending.pop(proto)
        if len(names) != len(fields):
            raise ParseError(source, "{0}: {1} names but {2} values".format(proto, len(names), len(fields)), lineno)
        try:
            tables[proto] = dict(zip(names, (int(v) for v in fields)))
        except ValueError:
            raise ParseError(source, "{0}: value is not a number".format(proto), lineno)
    return tables


def socket_drops(snmp, netstat):
    """The socket-level counters the collector charts (missing ones read 0: older kernels)."""
    udp = snmp.get("Udp", {})
    udp6 = snmp.get("Udp6", {})
    tcpext = netstat.get("TcpExt", {})
    return {
        "udp_rcvbuf_errors": udp.get("RcvbufErrors", 0) + udp6.get("Udp6RcvbufErrors", 0),
        "udp_in_errors": udp.get("InErrors", 0) + udp6.get("Udp6InErrors", 0),
        # A sender's ENOBUFS, also what a veth peer's full backlog looks like from the sending side.
        "udp_sndbuf_errors": udp.get("SndbufErrors", 0) + udp6.get("Udp6SndbufErrors", 0),
        "tcp_listen_drops": tcpext.get("ListenDrops", 0),
        "tcp_listen_overflows": tcpext.get("ListenOverflows", 0),
    }


def parse_snmp6(text, source):
    """/proc/net/snmp6 is 'Name value' per line; folded into the same {proto: {...}} shape."""
    out = {"Udp6": {}}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("Udp6"):
            continue
        parts = line.split()
        if len(parts) == 2:
            try:
                out["Udp6"][parts[0]] = int(parts[1])
            except ValueError:
                raise ParseError(source, "value is not a number", lineno)
    return out


def read_socket_drops(hostfs):
    snmp = parse_snmp_pairs(hostfs.read_text(SNMP_PATH), hostfs.path(SNMP_PATH), ("Udp",))
    try:
        snmp.update(parse_snmp6(hostfs.read_text("proc/net/snmp6"), hostfs.path("proc/net/snmp6")))
    except FileNotFoundError:
        pass  # IPv6 disabled
    try:
        netstat = parse_snmp_pairs(hostfs.read_text(NETSTAT_PATH), hostfs.path(NETSTAT_PATH), ("TcpExt",))
    except FileNotFoundError:
        netstat = {}
    return socket_drops(snmp, netstat)
