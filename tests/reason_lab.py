"""Drops of one kernel drop reason each, made for real in a DropLab's namespace pair.

CPU_BACKLOG and SOCKET_RCVBUFF come from lab.py's presets (SEED/INCIDENT with a tiny backlog,
UDP_OVERRUN). The kinds here make the others at a steady rate; each generator's process prints
how many it made so far, so `made()` is the count of events made, the number the collector's
reason counter is checked against:

    kind                 what is made                                   where it dies
    unhandled_proto      raw frames of ethertype 0x88b5 (IEEE local     __netif_receive_skb_core on
                         experimental), AF_PACKET from the namespace    the host veth: no handler
    no_socket            UDP datagrams to a host-side port nobody binds __udp4_lib_rcv
    netfilter_drop       UDP datagrams from the host side into the      nf_hook_slow (an nft drop
                         namespace                                      rule on input)
    tcp_listen_overflow  handshakes whose final ACK finds a listener's  tcp_v4_rcv (tcp_check_req)
                         accept queue full (see LISTEN_OVERFLOW_CODE)

Checked here (kernel 6.18) with a tracefs sample of skb:kfree_skb: each kind's drops carry
its reason and the counts match what was made.
Traffic stays on the pair: link-local addresses, one /30.
"""

import os
import subprocess
import threading

from lab import RPS_TARGET_CPU

ETHERTYPE = 0x88B5
CLOSED_PORT = 47901
FILTERED_PORT = 47902
LISTEN_PORT = 47903

# Each program: argv = its arguments; prints "ready", then its running count once per tick.
_TICKER = r"""
import sys, time
def every(rate, step):
    start, made, tick = time.monotonic(), 0, 0
    while True:
        tick += 1
        made += step()
        print(made, flush=True)
        time.sleep(max(0.0, start + tick / rate - time.monotonic()))
"""

UNHANDLED_CODE = _TICKER + r"""
import socket
ifname, dst_mac, rate, ethertype = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4], 0)
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((ifname, 0))
src = sock.getsockname()[4]
frame = bytes.fromhex(dst_mac.replace(":", "")) + src + ethertype.to_bytes(2, "big") + b"\0" * 46
print("ready", flush=True)
every(rate, lambda: sock.send(frame) and 1)
"""

UDP_CODE = _TICKER + r"""
import socket
dst, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def send():
    try:
        sock.sendto(b"x" * 32, (dst, port))
        return 1
    except OSError:
        return 0
print("ready", flush=True)
every(rate, send)
"""

# One process: the listener is made inside the namespace, then the process moves to the root
# namespace (setns) and connects from there, so each handshake crosses the veth pair. Both
# sides' receive work is steered to one CPU (RPS), so a burst's SYNs queue there ahead of the
# handshakes' final ACKs. Per tick: FILL connections fill the accept queue to its limit (N
# established, "full" only above N), then a burst: its SYNs still find room and make up to N
# requests; the first final ACK takes the last place and every later one finds the queue full:
# TCP_LISTEN_OVERFLOW. Syncookies are off in the namespace: with them, the kernel answers the
# overflowing SYNs with cookies and counts their ACKs as NO_SOCKET (cookie_v4_check), seen here.
# The process counts its own overflows (burst connections the client sees established that never
# reached the accept queue), then drains the queue and resets every connection.
LISTEN_OVERFLOW_CODE = _TICKER + r"""
import ctypes, socket, struct
addr, port, rate, burst, fill, ifname, rps_mask, root_ns_path = sys.argv[1:9]
port, rate, burst, fill = int(port), float(rate), int(burst), int(fill)
with open("/sys/class/net/{0}/queues/rx-0/rps_cpus".format(ifname), "w") as f:
    f.write(rps_mask)
with open("/proc/sys/net/ipv4/tcp_syncookies", "w") as f:
    f.write("0")
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((addr, port))
listener.listen(fill)
listener.setblocking(False)
libc = ctypes.CDLL(None, use_errno=True)
with open(root_ns_path) as root_ns:
    if libc.setns(root_ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")
LINGER_RESET = struct.pack("ii", 1, 0)
def client():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    sock.setblocking(False)
    sock.connect_ex((addr, port))
    return sock
def established(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1
def drain():
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        conn.close()
        n += 1
def burst_once():
    fillers = []
    for _ in range(fill):
        fillers.append(client())
        deadline = time.monotonic() + 0.5
        while not established(fillers[-1]) and time.monotonic() < deadline:
            time.sleep(0.001)
    clients = [client() for _ in range(burst)]
    time.sleep(0.05)
    made = sum(1 for s in clients if established(s)) - (drain() - fill)
    for sock in fillers + clients:
        sock.close()
    return max(0, made)
print("ready", flush=True)
every(rate, burst_once)
"""
LISTEN_FILL = 8  # the listen() backlog: N established fit, the N+1th too ("full" is above N)
LISTEN_BURST = 20

# The kinds, named as the collector names their reasons (the kernel's names, lowercased).
REASON_KINDS = ("unhandled_proto", "no_socket", "netfilter_drop", "tcp_listen_overflow")

_NFT_RULES = """table inet ndlab {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {0} counter drop
  }}
}}
""".format(FILTERED_PORT)


class Generator:
    """One running generator: its process's running count, read by a thread."""

    def __init__(self, lab, kind, proc, count_of=None):
        self.lab = lab
        self.kind = kind
        self.proc = proc
        self._count = 0
        self._count_of = count_of  # a function giving the count from the kernel, when it knows better
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self):
        for line in self.proc.stdout:
            try:
                self._count = int(line)
            except ValueError:
                pass

    def made(self):
        return self._count_of() if self._count_of else self._count

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


def nft_dropped(lab):
    """Packets the lab's nft rule dropped (its counter)."""
    text = lab.ns_exec("nft", "list", "table", "inet", "ndlab")
    for line in text.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    return 0


def start(lab, kind, per_second):
    """Start making drops of `kind` (REASON_KINDS) at `per_second`; a Generator."""
    if kind == "unhandled_proto":
        with open("/sys/class/net/{0}/address".format(lab.host_ifname)) as f:
            mac = f.read().strip()
        proc, _ = lab.start_python(UNHANDLED_CODE, lab.ns_ifname, mac, per_second, hex(ETHERTYPE))
        return Generator(lab, kind, proc)
    if kind == "no_socket":
        proc, _ = lab.start_python(UDP_CODE, lab.host_addr, CLOSED_PORT, per_second)
        return Generator(lab, kind, proc)
    if kind == "netfilter_drop":
        _nft_load(lab)
        proc, _ = lab.start_python(UDP_CODE, lab.ns_addr, FILTERED_PORT, per_second, in_namespace=False)
        return Generator(lab, kind, proc, lambda: nft_dropped(lab))
    if kind == "tcp_listen_overflow":
        # per_second overflows: bursts of LISTEN_BURST, a few of which reach the accept queue
        proc, _ = lab.start_python(LISTEN_OVERFLOW_CODE, lab.ns_addr, LISTEN_PORT,
                                   max(0.2, per_second / float(LISTEN_FILL - 1)), LISTEN_BURST, LISTEN_FILL,
                                   lab.ns_ifname, format(1 << RPS_TARGET_CPU, "x"),
                                   "/proc/{0}/ns/net".format(os.getpid()))
        return Generator(lab, kind, proc)
    raise ValueError("unknown kind {0!r}; known: {1}".format(kind, ", ".join(REASON_KINDS)))


def _nft_load(lab):
    proc = subprocess.run(["ip", "netns", "exec", lab.netns, "nft", "-f", "-"], input=_NFT_RULES,
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError("nft: " + proc.stderr.strip())
