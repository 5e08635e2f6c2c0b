#!/usr/bin/env python3
"""What counting the kernel's drop reasons costs: the collector's tick, and the kernel per drop.

1. The tick, reasons on and off, with no drops made: a namespace with N interfaces (veth pairs,
   IPv6 off), two collectors inside it (drop_reasons auto and off), timed in turn with the bare
   rtnetlink stats dump as collector_tick.py times them (CPU time, median, hot and cold), and the
   counters' own read (one read() per CPU) alone.
2. The kernel's cost per dropped packet with the counters open: a namespace with only its own
   loopback, a UDP socket with the smallest SO_RCVBUF that nobody reads, and a sender pinned to
   CPU 0: after the first few, each packet is dropped as SOCKET_RCVBUFF in the softirq that runs
   at the end of the sender's own send() (loopback), so the drop and the counting are charged to
   the sender's thread (this kernel has no IRQ time accounting; with it, the softirq time would
   not be the thread's). Rounds alternate counters open / closed, two ways:
   - paced at --rate packets/s (about 100,000): ns per drop = the sender's CPU time per packet
     with the counters open minus closed;
   - flat out (one CPU busy sending): ns per drop = 1e9 / packets per second open minus the same
     closed, the sender's throughput.
   /proc/stat's per-CPU busy time is not used: it is sampled at each tick (250 Hz here) and a
   sender that sleeps between batches is seen far too rarely or too often.

Needs root (namespaces; perf_event_open). Each part runs under `ip netns exec`, whose fresh /sys
hides the host's tracefs: it mounts tracefs in its own mount namespace, which goes with it.
Other work on CPU 0 adds noise to CPU 0's busy time: run it on a quiet machine, and compare the
rounds. The namespaces are removed at the end.

    sudo python3 bench/reasons.py
    sudo python3 bench/reasons.py --sizes 1000 --ticks 200 --rounds 8 --round-seconds 3 --rate 100000
"""

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time

from benchlib import (CacheEvictor, bare_stats_dump, cpu_times, delete_namespace, make_namespace, median,
                      raise_on_sigterm, run_inside, this_script_inside, tracefs_inside)

SENDER_CPU = 0
PORT = 47100
PAYLOAD = b"x" * 64
BATCH = 100  # packets sent between two looks at the clock


# -- 1. the tick -------------------------------------------------------------------------------

def inner_tick(ticks):
    """Runs inside the namespace: one JSON line."""
    from netdrops_collector import config, core
    from netdrops_collector.kernel import netlink
    from netdrops_collector.kernel.hostfs import HostFS
    tracefs_inside()
    rtnl = netlink.RtNetlink()
    on = core.Collector(config.build({"drop_reasons": "auto"}), HostFS(""))
    off = core.Collector(config.build({"drop_reasons": "off"}), HostFS(""))
    if on.reasons is None:
        raise SystemExit("the collector did not open the reason counters (see its log line)")
    for c in (on, off):
        c.collect()
        c.take_changes()
    result = {"interfaces": len(rtnl.dump_stats()), "reasons_counted": len(on.reasons.names),
              "descriptors": on.reasons.fds, "cpus": len(on.reasons.groups)}
    measured = [lambda: (on.collect(), on.take_changes()), lambda: (off.collect(), off.take_changes()),
                lambda: bare_stats_dump(rtnl), on.reasons.read]
    gc.collect()
    evictor = CacheEvictor()
    for mode, before in (("hot", None), ("cold", evictor)):
        tick_on, tick_off, dump, read = cpu_times(measured, ticks, before)
        result[mode] = {"on_us": tick_on * 1e6, "off_us": tick_off * 1e6, "dump_us": dump * 1e6,
                        "read_us": read * 1e6, "ratio_on": tick_on / dump, "ratio_off": tick_off / dump}
    print(json.dumps(result))


def bench_tick(size, ticks):
    ns = "ndbenchr{0}".format(os.getpid())
    make_namespace(ns, size)
    try:
        out = this_script_inside(ns, __file__, ["tick", "--ticks", str(ticks)])
    finally:
        delete_namespace(ns)
    r = json.loads(out.strip().splitlines()[-1])
    print("tick, no drops made: {interfaces} interfaces, {reasons_counted} reasons one by one + the total "
          "on {cpus} CPUs ({descriptors} descriptors)".format(**r))
    for mode in ("hot", "cold"):
        m = r[mode]
        print("  {0:>4}: tick reasons on {on_us:7.0f} us, off {off_us:7.0f} us (+{1:.0f} us); the counters' "
              "read alone {read_us:.1f} us; bare rtnetlink dump {dump_us:.0f} us".format(
                  mode, m["on_us"] - m["off_us"], **m))
        print("        tick / bare dump: reasons on {ratio_on:.2f}x, off {ratio_off:.2f}x (target: within 1.5x)"
              .format(**m))
    return r


# -- 2. the kernel's cost per drop ---------------------------------------------------------------

def udp_rcvbuf_errors():
    with open("/proc/net/snmp") as f:
        udp = [line.split()[1:] for line in f if line.startswith("Udp:")]
    return int(dict(zip(udp[0], udp[1]))["RcvbufErrors"])


def inner_drops(rounds, seconds, rate):
    """Runs inside the namespace (its own loopback): the rounds, one JSON line each."""
    from netdrops_collector.kernel import reasons
    tracefs_inside()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.sched_setaffinity(0, {SENDER_CPU})
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum; never read
    sink.bind(("127.0.0.1", PORT))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(("127.0.0.1", PORT))
    send = sender.send
    send_round(send, 1.0, rate or 100000)  # fills the sink's buffer: what follows is all drops
    for i in range(rounds):
        counters = reasons.open_local() if i % 2 == 0 else None
        try:
            before_read = counters.read() if counters else None
            rcvbuf0 = udp_rcvbuf_errors()
            sent, wall, thread_cpu = send_round(send, seconds, rate)
            drops = udp_rcvbuf_errors() - rcvbuf0
            counted = None
            if counters:
                after = counters.read()
                counted = after.get("socket_rcvbuff", 0) - before_read.get("socket_rcvbuff", 0)
        finally:
            if counters:
                counters.close()
        print(json.dumps({"round": i + 1, "counters": "open" if counters else "closed", "sent": sent,
                          "wall_s": wall, "thread_cpu_s": thread_cpu, "drops": drops,
                          "counted": counted}), flush=True)
    sink.close()
    sender.close()


def send_round(send, seconds, rate):
    """Send at `rate` packets/s (0: flat out) for `seconds`: (packets sent, wall s, this thread's
    CPU s)."""
    sent = 0
    start, cpu_start = time.monotonic(), time.thread_time()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate) if rate else sent + BATCH
        if sent >= due:
            time.sleep(min(end - now, (sent + BATCH - due) / rate))
            continue
        for _ in range(BATCH):
            try:
                send(PAYLOAD)
            except OSError:
                pass  # ENOBUFS or an ICMP error reported back: keep the rhythm
        sent += BATCH
    return sent, time.monotonic() - start, time.thread_time() - cpu_start


def bench_drops(rounds, seconds, rate):
    ns = "ndbenchd{0}".format(os.getpid())
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        out = run_inside(ns, [sys.executable, os.path.abspath(__file__), "--inner", "drops", "--rounds",
                              str(rounds), "--round-seconds", str(seconds), "--rate", str(rate)])
    finally:
        delete_namespace(ns)
    rows = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    print("kernel cost per drop: UDP to a full socket in a namespace, sender on CPU {0}, {1}, {2} rounds of {3:g} s"
          .format(SENDER_CPU, "{0:,} packets/s".format(rate) if rate else "flat out", rounds, seconds))
    per = {"open": [], "closed": []}
    for r in rows:
        n = r["sent"]
        r.update(rate=n / r["wall_s"], cpu_ns=r["thread_cpu_s"] / n * 1e9, wall_ns=r["wall_s"] / n * 1e9,
                 busy=r["thread_cpu_s"] / r["wall_s"], drop_share=r["drops"] / n)
        per[r["counters"]].append(r)
        print("  round {round:2}: counters {counters:>6}: {rate:9,.0f} packets/s, {drop_share:6.1%} dropped "
              "(RcvbufErrors){counted_text}; sender {cpu_ns:5.0f} ns CPU/packet ({busy:.0%} of CPU {cpu})".format(
                  cpu=SENDER_CPU, counted_text="" if r["counted"] is None else
                  ", {0:.1%} of those counted".format(r["counted"] / max(r["drops"], 1)), **r))
    means = {}
    for state in ("open", "closed"):
        rs = per[state]
        means[state] = {key: sum(r[key] for r in rs) / len(rs) for key in ("rate", "cpu_ns", "wall_ns")}
        means[state]["cpu_ns_median"] = median([r["cpu_ns"] for r in rs])
        print("  mean, counters {0:>6}: {rate:9,.0f} packets/s ({wall_ns:.0f} ns each); sender {cpu_ns:5.0f} ns "
              "CPU/packet (median {cpu_ns_median:.0f})".format(state, **means[state]))
    o, c = means["open"], means["closed"]
    if rate:
        print("  cost per drop with the counters open: {0:+.0f} ns of the sender's CPU time (means; medians "
              "{1:+.0f} ns)".format(o["cpu_ns"] - c["cpu_ns"], o["cpu_ns_median"] - c["cpu_ns_median"]))
    else:
        print("  cost per drop with the counters open: {0:+.0f} ns from the throughput ({1:+.1%} packets/s), "
              "{2:+.0f} ns of the sender's CPU time".format(o["wall_ns"] - c["wall_ns"], o["rate"] / c["rate"] - 1,
                                                           o["cpu_ns"] - c["cpu_ns"]))
    return means


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", nargs="?", choices=("all", "tick", "drops"), default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000], help="interfaces for the tick")
    parser.add_argument("--ticks", type=int, default=200, help="ticks timed for the median")
    parser.add_argument("--rounds", type=int, default=8, help="drop rounds, alternating counters open/closed")
    parser.add_argument("--round-seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=100000, help="packets (= drops) per second of the paced rounds")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        if args.part == "tick":
            return inner_tick(args.ticks)
        return inner_drops(args.rounds, args.round_seconds, args.rate)
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, perf_event_open)")
    raise_on_sigterm()
    print("machine: {0} CPUs, {1}, Python {2}".format(os.cpu_count(), os.uname().release, sys.version.split()[0]))
    if args.part in ("all", "tick"):
        for size in args.sizes:
            bench_tick(size, args.ticks)
    if args.part in ("all", "drops"):
        bench_drops(args.rounds, args.round_seconds, args.rate)
        bench_drops(args.rounds, args.round_seconds, 0)


if __name__ == "__main__":
    sys.exit(main())
