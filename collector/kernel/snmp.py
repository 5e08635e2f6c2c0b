"""/proc/net/snmp and /proc/net/netstat: socket-level receive drops.

Both files are pairs of lines, a header line of names and a value line, each starting with the
protocol ('Udp:', 'TcpExt:'). UDP RcvbufErrors are socket-buffer drops, which a larger backlog
does not fix; TCP ListenOverflows/ListenDrops are accept-queue drops.
"""

import functools

from ..errors import ParseError

SNMP_PATH = "proc/net/snmp"
NETSTAT_PATH = "proc/net/netstat"
SNMP6_PATH = "proc/net/snmp6"


def parse_snmp_pairs(text, source, wanted=None):
    """Text -> {protocol: {name: int}}: every counter, or only the `wanted` {protocol: names}."""
    if wanted is not None:
        return _parse_wanted(text, source, wanted)
    tables = {}
    headers = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        proto, sep, rest = line.partition(":")
        if not sep:
            if line.strip():
                raise ParseError(source, "no protocol prefix", lineno)
            continue
        if proto not in headers:
            headers[proto] = rest
            continue
        names = headers.pop(proto).split()
        table = _table(source, proto, len(names), tuple(enumerate(names)), rest, lineno)
        tables.setdefault(proto, table)  # the first pair, as _parse_wanted finds it
    return tables


def _parse_wanted(text, source, wanted):
    """The collector's path, every tick: find the wanted protocols' two lines and split only
    those (TcpExt alone has over a hundred counters, of which two are wanted)."""
    text = "\n" + text  # every line, the first too, now follows a newline
    tables = {}
    for proto, names in wanted.items():
        key = "\n" + proto + ":"
        header_at = text.find(key)
        values_at = text.find(key, header_at + 1) if header_at >= 0 else -1
        if values_at < 0:
            continue  # the kernel does not have this protocol (or printed only its header)
        header = text[header_at + len(key):_line_end(text, header_at + 1)]
        values = text[values_at + len(key):_line_end(text, values_at + 1)]
        count, columns = _columns(header, names)
        tables[proto] = _table(source, proto, count, columns, values, text.count("\n", 0, values_at + 1))
    return tables


def _line_end(text, start):
    end = text.find("\n", start)
    return len(text) if end < 0 else end


@functools.lru_cache(maxsize=64)
def _columns(header, wanted):
    """(number of names, ((column, name), ...) of the wanted names present) of a header line.
    A kernel prints the same header every time: this is worked out once, not every tick."""
    names = header.split()
    return len(names), tuple((names.index(name), name) for name in wanted if name in names)


def _table(source, proto, count, columns, values_text, lineno):
    values = values_text.split()
    if count != len(values):
        raise ParseError(source, "{0}: {1} names but {2} values".format(proto, count, len(values)), lineno)
    try:
        return {name: int(values[i]) for i, name in columns}
    except ValueError:
        raise ParseError(source, "{0}: value is not a number".format(proto), lineno)


# The socket-level counters the collector charts: chart key -> (table, counter) pairs summed.
SOCKET_DROPS = {
    "udp_rcvbuf_errors": (("Udp", "RcvbufErrors"), ("Udp6", "Udp6RcvbufErrors")),
    "udp_in_errors": (("Udp", "InErrors"), ("Udp6", "Udp6InErrors")),
    # A sender's ENOBUFS, also what a veth peer's full backlog looks like from the sending side.
    "udp_sndbuf_errors": (("Udp", "SndbufErrors"), ("Udp6", "Udp6SndbufErrors")),
    "tcp_listen_drops": (("TcpExt", "ListenDrops"),),
    "tcp_listen_overflows": (("TcpExt", "ListenOverflows"),),
}
# The one list of socket counter keys: the chart's dimensions, the core's snapshots and the
# advisor's Evidence.sockets all take these.
SOCKET_KEYS = tuple(SOCKET_DROPS)


def _wanted(table):
    return tuple(name for places in SOCKET_DROPS.values() for t, name in places if t == table)


# Only these are parsed every tick, by file.
SNMP_WANTED = {"Udp": _wanted("Udp")}
SNMP6_WANTED = _wanted("Udp6")
NETSTAT_WANTED = {"TcpExt": _wanted("TcpExt")}


def socket_drops(snmp, netstat):
    """SOCKET_DROPS from parsed tables. A counter the kernel does not have (an old kernel, no
    /proc/net/netstat) is left out, not reported as 0; IPv6 off only adds nothing."""
    tables = dict(snmp, **netstat)
    out = {}
    for key, places in SOCKET_DROPS.items():
        found = [tables[t][name] for t, name in places if name in tables.get(t, ())]
        if found:
            out[key] = sum(found)
    return out


def parse_snmp6(text, source, wanted=None):
    """/proc/net/snmp6 is 'Name value' per line; its Udp6 counters (all, or the `wanted` names)
    folded into the same {proto: {...}} shape."""
    if wanted is not None:
        return {"Udp6": _find_snmp6(text, source, wanted)}
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("Udp6"):
            out.setdefault(parts[0], _snmp6_value(parts[1], source, lineno))  # the first, as found
    return {"Udp6": out}


def _find_snmp6(text, source, wanted):
    """The collector's path, every tick: look up the few wanted lines of ninety."""
    text = "\n" + text  # every line, the first too, now follows a newline
    out = {}
    for name in wanted:
        at = text.find("\n" + name)
        while at >= 0:
            start = at + 1 + len(name)
            rest = text[start:_line_end(text, start)]
            words = rest.split()
            # Not a longer name that starts with this one; and, as in the full parse, a line
            # of two words.
            if rest[:1] in (" ", "\t") and len(words) == 1:
                out[name] = _snmp6_value(words[0], source, text.count("\n", 0, start))
                break
            at = text.find("\n" + name, start)
    return out


def _snmp6_value(word, source, lineno):
    try:
        return int(word)
    except ValueError:
        raise ParseError(source, "value is not a number", lineno)


def read_socket_drops(hostfs):
    snmp = _read(hostfs, SNMP_PATH, parse_snmp_pairs, SNMP_WANTED)
    try:
        snmp.update(_read(hostfs, SNMP6_PATH, parse_snmp6, SNMP6_WANTED))
    except FileNotFoundError:
        pass  # IPv6 disabled
    try:
        netstat = _read(hostfs, NETSTAT_PATH, parse_snmp_pairs, NETSTAT_WANTED)
    except FileNotFoundError:
        netstat = {}
    return socket_drops(snmp, netstat)


def _read(hostfs, path, parse, wanted):
    kept = hostfs.kept_file(path)
    return parse(kept.read_text(), kept.path, wanted)
