"""netdrops-reasons: the root helper that opens the drop-reason counters and hands them over.

It does one thing. Per connection on its unix socket (SOCK_SEQPACKET, group netdata, mode
0660) it opens the skb:kfree_skb counters, passes their descriptors to the caller over
SCM_RIGHTS, closes its own copies and is done: it serves nothing per tick, and the caller
reads the counts without privilege. Under systemd it is socket-activated (Accept=yes: one
short-lived process per connection, the connection as fd 3); without systemd,
`--listen PATH` runs it as a small accept loop.
"""

import argparse
import grp
import json
import os
import socket
import sys

from .kernel import perfcount, reasons

SD_LISTEN_FDS_START = 3
SOCKET_GROUP = "netdata"


def serve(conn):
    """Answer one connection. Errors go to the caller as one sentence, never as a traceback."""
    conn.settimeout(reasons.HELPER_TIMEOUT)
    try:
        request = json.loads(conn.recv(reasons.MAX_MESSAGE).decode() or "null")
        if not isinstance(request, dict) or request.get("v") != reasons.PROTOCOL_VERSION:
            raise reasons.ReasonsUnavailable("unknown request (protocol version {0} expected)".format(
                reasons.PROTOCOL_VERSION))
        max_fds = request.get("max_fds")
        if isinstance(max_fds, bool) or not isinstance(max_fds, int) or max_fds < 1:
            raise reasons.ReasonsUnavailable("max_fds must be a whole number of 1 or more")
        names, groups = reasons.open_groups(max_fds)
    except (reasons.ReasonsUnavailable, ValueError, UnicodeDecodeError, OSError) as error:
        try:
            conn.sendall(reasons.encode({"error": str(error)}))
        except OSError:
            pass
        return 1
    try:
        conn.sendall(reasons.encode({"v": reasons.PROTOCOL_VERSION, "reasons": list(names),
                                     "cpus": len(groups)}))
        for i, (cpu, fds) in enumerate(groups):
            socket.send_fds(conn, [reasons.encode({"cpu": cpu})], fds)
            perfcount.close_all(fds)  # the caller holds them now
            groups[i] = (cpu, [])
        conn.sendall(reasons.encode({"end": True}))
    except OSError:
        return 1
    finally:
        for _cpu, fds in groups:
            perfcount.close_all(fds)
    return 0


def listen(path, group=SOCKET_GROUP):
    """The accept loop for hosts without systemd: the socket as the socket unit makes it."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o117)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    os.chown(path, 0, grp.getgrnam(group).gr_gid)
    os.chmod(path, 0o660)
    server.listen(8)
    while True:
        conn, _addr = server.accept()
        with conn:
            serve(conn)


def activated_socket():
    """The connection systemd passed (Accept=yes), or None when not socket-activated."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netdrops-collector reasons-helper",
        description="Open the kernel's drop-reason counters as root and pass them to the netdrops "
                    "collector over a unix socket. Socket-activated by netdrops-reasons.socket; "
                    "without systemd, run it with --listen.")
    parser.add_argument("--listen", metavar="PATH", help="listen on PATH (mode 0660, group netdata) "
                        "and serve each connection; default socket: " + reasons.DEFAULT_SOCKET)
    parser.add_argument("--group", default=SOCKET_GROUP, help="the group the socket is for (default netdata)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("netdrops reasons-helper: run it as root: it opens perf counters", file=sys.stderr)
        return 2
    if args.listen:
        try:
            listen(args.listen, args.group)
        except KeyError:
            print("netdrops reasons-helper: no group {0}".format(args.group), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
    conn = activated_socket()
    if conn is None:
        print("netdrops reasons-helper: not socket-activated; give --listen PATH", file=sys.stderr)
        return 2
    with conn:
        return serve(conn)


if __name__ == "__main__":
    sys.exit(main())
