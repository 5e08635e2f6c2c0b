#!/usr/bin/env python3
"""Per-tick cost of the collector against the bare kernel reads it relies on.

Makes a network namespace with N interfaces (veth pairs), runs the collector inside it, and
prints, per size: the CPU time of one Collector.collect() tick, of the bare rtnetlink stats
dump (send + recv until NLMSG_DONE, no parsing), and of /proc/net/dev, their ratios, and the
collector's memory at the start and end of a long run. The namespace is removed at the end.

    sudo python3 bench/collector_tick.py                 # 1,000 and 10,000 interfaces
    sudo python3 bench/collector_tick.py --sizes 1000 --ticks 2000 --memory-ticks 10000
"""

import argparse
import gc
import json
import os
import resource
import sys
import time

from benchlib import (SOCKET_FILES, bare_stats_dump, cpu_times, delete_namespace, make_namespace,
                      raise_on_sigterm, rss_kib, this_script_inside)


def inner(ticks, memory_ticks):
    """Runs inside the namespace: measure and print one JSON line."""
    from netdrops_collector import config, core, netlink
    from netdrops_collector.hostfs import HostFS
    rtnl = netlink.RtNetlink()
    host = HostFS("")
    collector = core.Collector(config.build({}), host)
    collector.collect()
    collector.take_changes()
    n_ifaces = len(rtnl.dump_stats())
    gc.collect()
    tick, dump, netdev, softnet, socket_files = cpu_times([
        lambda: (collector.collect(), collector.take_changes()),
        lambda: bare_stats_dump(rtnl),
        lambda: open("/proc/net/dev", "rb").read(),
        lambda: open("/proc/net/softnet_stat", "rb").read(),
        lambda: [open(p, "rb").read() for p in SOCKET_FILES],
    ], ticks)
    wall_start = time.monotonic()
    rss_start = None
    for i in range(memory_ticks):
        collector.collect()
        collector.take_changes()
        if i == 99:
            gc.collect()
            rss_start = rss_kib()
    gc.collect()
    rss_end = rss_kib()
    print(json.dumps({
        "interfaces": n_ifaces, "tick_ms": tick * 1e3, "bare_dump_ms": dump * 1e3,
        "proc_net_dev_ms": netdev * 1e3, "softnet_ms": softnet * 1e3, "socket_files_ms": socket_files * 1e3,
        "bare_reads_ms": (dump + softnet + socket_files) * 1e3,
        "ratio_to_dump": tick / dump, "ratio_to_reads": tick / (dump + softnet + socket_files),
        "memory_ticks": memory_ticks, "rss_kib_at_100": rss_start, "rss_kib_at_end": rss_end,
        "memory_run_s": time.monotonic() - wall_start,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=200, help="ticks timed for the median")
    parser.add_argument("--memory-ticks", type=int, default=10000, help="ticks of the memory run")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.ticks, args.memory_ticks)
    raise_on_sigterm()
    print("machine: {0} CPUs, {1}, Python {2}".format(os.cpu_count(), os.uname().release, sys.version.split()[0]))
    for size in args.sizes:
        ns = "ndbench{0}".format(os.getpid())
        start = time.monotonic()
        make_namespace(ns, size)
        made = time.monotonic() - start
        try:
            out = this_script_inside(ns, __file__, ["--ticks", str(args.ticks), "--memory-ticks", str(args.memory_ticks)])
        finally:
            delete_namespace(ns)
        r = json.loads(out.strip().splitlines()[-1])
        print("{interfaces:>6} interfaces (made in {made:.0f} s): tick {tick_ms:.3f} ms CPU".format(made=made, **r))
        print("        bare reads: rtnetlink stats dump {bare_dump_ms:.3f} ms + softnet_stat {softnet_ms:.3f} ms + "
              "snmp/snmp6/netstat {socket_files_ms:.3f} ms = {bare_reads_ms:.3f} ms (/proc/net/dev alone "
              "{proc_net_dev_ms:.3f} ms)".format(**r))
        print("        tick / bare reads {ratio_to_reads:.2f}x, tick / bare rtnetlink dump {ratio_to_dump:.2f}x".format(**r))
        print("        memory: {rss_kib_at_100} KiB RSS at tick 100, {rss_kib_at_end} KiB after {memory_ticks} ticks "
              "({memory_run_s:.0f} s)".format(**r))


if __name__ == "__main__":
    sys.exit(main())
