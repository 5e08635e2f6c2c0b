"""netdrops-reasons: the root helper that opens the drop-reason counters and hands them over.

It does one thing. Per connection on its unix socket (SOCK_SEQPACKET, group netdata, mode
0660) it reads one small request, opens the skb:kfree_skb counters, passes their descriptors to
the caller over SCM_RIGHTS, closes its own copies and is done: it serves nothing per tick, and
the caller reads the counts without privilege. Under systemd it is socket-activated (Accept=yes:
one short-lived process per connection, the connection as fd 3); without systemd,
`--listen PATH` runs it as a small accept loop, one connection at a time.

Exit codes: 0 served, 1 the request was refused (the caller got {"error": ...}), 2 usage
(not root, no socket, no such group).
"""

import argparse
import grp
import json
import os
import signal
import socket
import stat
import struct
import sys

from .kernel import perfcount, reasons

SD_LISTEN_FDS_START = 3
SOCKET_GROUP = "netdata"
# A request is {"v": 1, "max_fds": N}: a few dozen bytes. Anything longer is refused whole
# (SOCK_SEQPACKET would cut it silently at the buffer's size).
MAX_REQUEST = 512
REQUEST_TIMEOUT = reasons.HELPER_TIMEOUT  # a client that connects and sends nothing is dropped


def log(message):
    """One line on stderr: the journal under systemd."""
    print("netdrops reasons-helper: " + message, file=sys.stderr, flush=True)


def peer(conn):
    """'pid P uid U' of the caller (SO_PEERCRED), for the log."""
    try:
        pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
        return "pid {0} uid {1}".format(pid, uid)
    except OSError:
        return "an unknown caller"


def read_request(conn):
    """The caller's request, checked; ReasonsUnavailable with a sentence when it is not one."""
    try:
        data, _ancillary, flags, _addr = conn.recvmsg(MAX_REQUEST)
    except socket.timeout:
        raise reasons.ReasonsUnavailable("no request within {0:g} s".format(REQUEST_TIMEOUT))
    if flags & socket.MSG_TRUNC:
        raise reasons.ReasonsUnavailable("request longer than {0} bytes".format(MAX_REQUEST))
    if not data:
        raise reasons.ReasonsUnavailable("the connection closed without a request")
    try:
        request = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        request = None
    if not isinstance(request, dict) or request.get("v") != reasons.PROTOCOL_VERSION:
        raise reasons.ReasonsUnavailable("unknown request (protocol version {0} expected)".format(
            reasons.PROTOCOL_VERSION))
    max_fds = request.get("max_fds")
    if isinstance(max_fds, bool) or not isinstance(max_fds, int) or max_fds < 1:
        raise reasons.ReasonsUnavailable("max_fds must be a whole number of 1 or more")
    return max_fds


def serve(conn):
    """Answer one connection: 0 when the counters went over, 1 when it was refused. Errors go
    to the caller as one sentence, never as a traceback."""
    conn.settimeout(REQUEST_TIMEOUT)
    who = peer(conn)
    try:
        names, groups = reasons.open_groups(read_request(conn))
    except (reasons.ReasonsUnavailable, OSError) as error:
        log("refused {0}: {1}".format(who, error))
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
    except OSError as error:
        log("{0} went away: {1}".format(who, error))
        return 1
    finally:
        for _cpu, fds in groups:
            perfcount.close_all(fds)
    log("gave {0} counters of {1} reasons on {2} CPUs to {3}".format(
        len(groups) * (len(names) + 1), len(names), len(groups), who))
    return 0


def listen(path, group=SOCKET_GROUP):
    """The accept loop for hosts without systemd: the socket as the socket unit makes it, removed
    again when the loop ends (SIGTERM, SIGINT)."""
    gid = grp.getgrnam(group).gr_gid  # KeyError before anything is made
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise FileExistsError("{0} exists and is not a socket: not replacing it".format(path))
        os.unlink(path)  # a socket left by an earlier run
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o117)  # 0660 from the start, never wider
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        os.chown(path, 0, gid)
        server.listen(8)
        log("listening on {0} (group {1}, mode 0660)".format(path, group))
        while True:
            conn, _addr = server.accept()
            with conn:
                serve(conn)
    finally:
        server.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def activated_socket():
    """The connection systemd passed (Accept=yes), or None when not socket-activated."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def add_arguments(parser):
    parser.add_argument("--listen", metavar="PATH",
                        help="without systemd: listen on PATH (mode 0660, group --group) and serve each "
                             "connection, e.g. " + reasons.DEFAULT_SOCKET)
    parser.add_argument("--group", default=SOCKET_GROUP,
                        help="the group that may connect (default netdata)")


def run(args):
    if os.geteuid() != 0:
        log("run it as root: it opens perf counters")
        return 2
    if args.listen:
        try:
            listen(args.listen, args.group)
        except KeyError:
            log("no group {0}".format(args.group))
            return 2
        except OSError as error:
            log(str(error))
            return 2
        except KeyboardInterrupt:
            pass
        return 0
    conn = activated_socket()
    if conn is None:
        log("not socket-activated (netdrops-reasons.socket); without systemd give --listen PATH")
        return 2
    with conn:
        if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            log("fd 3 is a listening socket: the socket unit needs Accept=yes")
            return 2
        return serve(conn)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netdrops-collector reasons-helper",
        description="Open the kernel's drop-reason counters as root and pass them to the netdrops "
                    "collector over a unix socket. Socket-activated by netdrops-reasons.socket; "
                    "without systemd, run it with --listen.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
