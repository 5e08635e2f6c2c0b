"""Which UDP sockets drop: /proc/net/udp{,6} count drops per socket (the `drops` column), and
/proc/PID/fd links name the processes holding them. Read on the machine itself only; it turns
"UDP RcvbufErrors are rising" into "127.0.0.1:5353 held by avahi-daemon dropped 300"."""

import collections
import os
import socket
import struct

UdpSocket = collections.namedtuple("UdpSocket", "proto address port rx_queue inode drops")

UDP_FILES = (("udp", "proc/net/udp"), ("udp6", "proc/net/udp6"))
HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _unsigned(text, base):
    """Only what the kernel prints: int() alone also takes '-1', '+1', '1_0' and '0x10', which
    would pass on as negative or wrong counts."""
    if not text or not text.isascii() or not (text.isdigit() if base == 10 else set(text) <= HEX_DIGITS):
        raise ValueError("not an unsigned number: {0!r}".format(text))
    return int(text, base)


def _address(hex_addr, proto):
    """Kernel hex (host byte order per 32-bit word) -> printable address."""
    raw = bytes.fromhex(hex_addr)
    words = struct.unpack("<" + "I" * (len(raw) // 4), raw)
    packed = struct.pack(">" + "I" * len(words), *words)
    family = socket.AF_INET if proto == "udp" else socket.AF_INET6
    return socket.inet_ntop(family, packed)


def parse_proc_net_udp(text, proto="udp"):
    """/proc/net/udp text -> [UdpSocket]; lines that do not parse are skipped (a socket can
    close while the file is read)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        try:
            addr, port = fields[1].rsplit(":", 1)
            port = _unsigned(port, 16)
            if port > 0xFFFF:
                continue
            rx_queue = _unsigned(fields[4].split(":")[1], 16)
            out.append(UdpSocket(proto, _address(addr, proto), port, rx_queue,
                                 _unsigned(fields[9], 10), _unsigned(fields[12], 10)))
        except (ValueError, IndexError, struct.error, OSError):
            continue
    return out


def read_udp_sockets(hostfs):
    sockets = []
    for proto, path in UDP_FILES:
        try:
            sockets.extend(parse_proc_net_udp(hostfs.read_text(path), proto))
        except OSError:
            pass
    return sockets


def drops_between(before, after):
    """[(UdpSocket, drops in between)] for sockets that dropped, most first. A socket opened
    in between counts all its drops."""
    start = {(s.proto, s.inode): s.drops for s in before}
    out = []
    for sock in after:
        delta = sock.drops - start.get((sock.proto, sock.inode), 0)
        if delta > 0:
            out.append((sock, delta))
    return sorted(out, key=lambda pair: -pair[1])


def owners(inodes, proc="/proc"):
    """{inode: ['comm[pid]', ...]} for the given socket inodes (needs root for others' fds)."""
    wanted = {"socket:[{0}]".format(i): i for i in inodes}
    found = {}
    if not wanted:
        return found
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            links = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue  # gone, or not ours to read
        hits = [wanted[link] for link in links if link in wanted]
        if not hits:
            continue
        try:
            with open(os.path.join(proc, pid, "comm")) as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        for inode in set(hits):
            found.setdefault(inode, []).append("{0}[{1}]".format(comm, pid))
    return found
