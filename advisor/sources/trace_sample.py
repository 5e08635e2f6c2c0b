"""Detail on demand: a short, bounded look at the skb:kfree_skb records of a few drop reasons, for
what a count cannot say (UNHANDLED_PROTO: which ethertype; NO_SOCKET: which port; NETFILTER_DROP:
which function dropped).

The advisor makes its own tracefs instance (instances/netdrops-<pid>), so the global trace buffer
and anyone else's instance are untouched; the filter (`reason == N || ...`, N from this kernel's
format file) runs in the kernel, so only the sampled reasons reach the buffer. It reads trace_pipe
without blocking until MAX_RECORDS records or its deadline, then disables the events and removes
the instance: always, on errors, KeyboardInterrupt and SIGTERM too. tracefs not mounted: no
sample, and the note says so (the advisor never mounts it).

For NO_SOCKET the kfree_skb record has no port, so two events of the same instance give it
(checked on 6.18): icmp:icmp_send (UDP to a closed port gets ICMP port unreachable, type 3 code 3,
whose record shows the offending datagram's `to ADDR:PORT`) and tcp:tcp_send_reset with
reason=NO_SOCKET (its `src` is the closed port). Both are rate-limited by the kernel
(icmp_ratelimit), so they name ports, not counts. NETFILTER_DROP records show the dropping
function as the location (nft_do_chain for an nftables rule, seen on 6.18; nf_hook_slow
otherwise): the tracepoint has no hook or rule.

parse_records() is the parser (text -> records); sample() does the I/O.
"""

import collections
import os
import re
import select
import signal
import threading
import time

from netdrops_collector.kernel import reasons as kreasons, tracefs

from ..diagnose.evidence import ReasonSample

# the reasons worth a look, and why (lowercase kernel names)
DETAIL_REASONS = (
    ("unhandled_proto", "which ethertype the frames had"),
    ("no_socket", "which closed ports the packets were for"),
    ("netfilter_drop", "which function dropped them (the tracepoint has no hook or rule)"),
)
DETAIL_NAMES = tuple(name for name, _why in DETAIL_REASONS)
MAX_RECORDS = 200        # stop after this many kfree_skb records
MAX_SECONDS = 5.0        # and after this long at most (the window, when shorter)
MIN_RATE = 0.5           # a reason is looked at when it dropped at least this many per second
READ_SIZE = 65536
INSTANCE_PREFIX = "netdrops-"

ICMP_EVENT = ("icmp", "icmp_send")
RESET_EVENT = ("tcp", "tcp_send_reset")
ICMP_PORT_UNREACH_FILTER = "type == 3 && code == 3"   # ICMP_DEST_UNREACH, ICMP_PORT_UNREACH

Record = collections.namedtuple("Record", "event reason protocol location port")

_KFREE = re.compile(r"\bkfree_skb: .*?protocol=(\d+) location=(\S+) reason: (\w+)")
_ICMP = re.compile(r"\bicmp_send: icmp_send: type=3, code=3\. From \S+ to \S+:(\d+)\b")
_RESET = re.compile(r"\btcp_send_reset: .*?src=(\S+?):(\d+) dest=\S+ .*reason=NO_SOCKET\b")


def parse_records(text):
    """trace_pipe text -> [Record]; lines of other events or torn lines are skipped."""
    out = []
    for line in text.splitlines():
        m = _KFREE.search(line)
        if m:
            out.append(Record("kfree_skb", m.group(3).lower(), int(m.group(1)), m.group(2), None))
            continue
        m = _ICMP.search(line)
        if m:
            out.append(Record("icmp_send", "no_socket", None, None, "udp/" + m.group(1)))
            continue
        m = _RESET.search(line)
        if m:
            out.append(Record("tcp_send_reset", "no_socket", None, None, "tcp/" + m.group(2)))
    return out


def function_of(location):
    """'__netif_receive_skb_core.constprop.0+0x7e6/0x1350' -> '__netif_receive_skb_core'."""
    return location.split("+")[0].split(".")[0]


def summarise(records, names, seconds, limit, note=None):
    """[Record] -> ReasonSample (pure)."""
    sample = ReasonSample(reasons=list(names), seconds=round(seconds, 3), limit=limit, note=note)
    for rec in records:
        if rec.event == "kfree_skb":
            if rec.reason not in names:
                continue
            sample.records += 1
            sample.by_reason[rec.reason] = sample.by_reason.get(rec.reason, 0) + 1
            protos = sample.protocols.setdefault(rec.reason, {})
            key = "0x{0:04x}".format(rec.protocol)
            protos[key] = protos.get(key, 0) + 1
            places = sample.locations.setdefault(rec.reason, {})
            where = function_of(rec.location)
            places[where] = places.get(where, 0) + 1
        elif rec.port and "no_socket" in names:
            sample.ports[rec.port] = sample.ports.get(rec.port, 0) + 1
    return sample


def wanted(reason_counts, window_seconds):
    """The DETAIL_NAMES worth a sample, from the reasons counted over the window."""
    if not reason_counts or window_seconds <= 0:
        return ()
    return tuple(n for n in DETAIL_NAMES if reason_counts.get(n, 0) / window_seconds >= MIN_RATE)


class _Instance:
    """Our tracefs instance: made, configured, and removed exactly once (remove() is idempotent)."""

    def __init__(self, root):
        self.path = os.path.join(root, "instances", "{0}{1}".format(INSTANCE_PREFIX, os.getpid()))
        self.enabled = []
        self.made = False

    def make(self):
        os.mkdir(self.path)
        self.made = True

    def write(self, system, event, name, value):
        with open(os.path.join(self.path, "events", system, event, name), "w") as f:
            f.write(value)

    def enable(self, system, event, filter_text=None):
        if filter_text:
            self.write(system, event, "filter", filter_text)
        self.write(system, event, "enable", "1")
        self.enabled.append((system, event))

    def remove(self):
        for system, event in self.enabled:
            try:
                self.write(system, event, "enable", "0")
            except OSError:
                pass
        self.enabled = []
        if self.made:
            self.made = False
            os.rmdir(self.path)


def _sigterm_as_exit():
    """SIGTERM raises SystemExit while sampling (so finally runs); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    if old in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)
        return lambda: signal.signal(signal.SIGTERM, old)
    return lambda: None


def sample(names, seconds=MAX_SECONDS, limit=MAX_RECORDS, root=None, clock=time.monotonic):
    """Sample the kfree_skb records of `names` (DETAIL_NAMES) for at most `seconds` or `limit`
    records: a ReasonSample, with a note instead of records when it cannot."""
    names = tuple(names)
    if os.geteuid() != 0:
        return ReasonSample(reasons=list(names), note="no detail sample: tracefs instances need root")
    root = root or tracefs.find_root()
    if root is None:
        return ReasonSample(reasons=list(names), note="no detail sample: tracefs is not mounted "
                            "(as root: mount -t tracefs nodev {0})".format(tracefs.DEFAULT_MOUNT))
    try:
        _event_id, by_name = kreasons.reason_numbers(root)
    except kreasons.ReasonsUnavailable as error:
        return ReasonSample(reasons=list(names), note="no detail sample: {0}".format(error))
    numbers = [by_name[n.upper()] for n in names if n.upper() in by_name]
    if not numbers:
        return ReasonSample(reasons=list(names), note="no detail sample: this kernel names none of these reasons")
    instance = _Instance(root)
    undo = _sigterm_as_exit()
    fd = None
    chunks, started = [], clock()
    failed = None  # why the sample failed, said instead of records
    try:
        instance.make()
        instance.enable("skb", "kfree_skb", " || ".join("reason == {0}".format(n) for n in numbers))
        notes = []
        if "no_socket" in names:
            for (system, event), filter_text in ((ICMP_EVENT, ICMP_PORT_UNREACH_FILTER), (RESET_EVENT, None)):
                try:
                    instance.enable(system, event, filter_text)
                except OSError:
                    notes.append("no {0}:{1} here, so fewer ports".format(system, event))
        fd = os.open(os.path.join(instance.path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        deadline = started + seconds
        while clock() < deadline:
            ready, _w, _x = select.select([fd], [], [], min(0.2, max(0.0, deadline - clock())))
            if ready:
                try:
                    chunks.append(os.read(fd, READ_SIZE))
                except BlockingIOError:
                    continue
                text = b"".join(chunks).decode("utf-8", "replace")
                if text.count("kfree_skb:") >= limit:
                    break
    except OSError as error:
        failed = "no detail sample: {0} ({1})".format(error.strerror or error,
                                                      getattr(error, "filename", None) or root)
    finally:
        if fd is not None:
            os.close(fd)   # before rmdir: an instance with trace_pipe open is busy
        try:
            instance.remove()
        except OSError as error:  # said, never a traceback: the user can remove it by hand
            failed = "; ".join(x for x in (failed, "the tracefs instance {0} could not be removed ({1}): "
                                           "rmdir it".format(instance.path, error.strerror or error)) if x)
        finally:
            undo()
    if failed and not chunks:
        return ReasonSample(reasons=list(names), note=failed)
    took = clock() - started
    records = parse_records(b"".join(chunks).decode("utf-8", "replace"))
    kfree = [r for r in records if r.event == "kfree_skb"][:limit]
    others = [r for r in records if r.event != "kfree_skb"]
    note = "; ".join(notes + ([failed] if failed else [])) or None
    if len(kfree) >= limit:
        note = "; ".join(x for x in (note, "stopped at {0} records".format(limit)) if x)
    return summarise(kfree + others, names, took, limit, note)
