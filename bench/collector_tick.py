#!/usr/bin/env python3
"""Per-tick cost of the collector against the bare kernel reads it relies on.

Makes a network namespace with N interfaces (veth pairs, IPv6 off unless --ipv6), runs the
collector inside it, and prints, per size: the CPU time of one Collector.collect() tick, of the
bare rtnetlink stats dump (send + recv until NLMSG_DONE, no parsing) and of the other files a
tick reads (pread on kept descriptors, as the collector reads them), their ratios, hot (back to
back) and cold (CPU caches flushed before each), and the collector's memory at the start and end
of a long run. The namespace is removed at the end.

    sudo python3 bench/collector_tick.py                 # 1,000 and 10,000 interfaces
    sudo python3 bench/collector_tick.py --sizes 1000 --ticks 2000 --memory-ticks 10000
"""

import argparse
import gc
import json
import os
import sys
import time

from benchlib import (SOCKET_FILES, CacheEvictor, KeptReads, bare_stats_dump, cpu_times, delete_namespace,
                      make_namespace, raise_on_sigterm, read_file, rss_kib, this_script_inside)


def inner(ticks, memory_ticks):
    """Runs inside the namespace: measure and print one JSON line."""
    from netdrops_collector import config, core
    from netdrops_collector.kernel import netlink
    from netdrops_collector.kernel.hostfs import HostFS
    rtnl = netlink.RtNetlink()
    host = HostFS("")
    collector = core.Collector(config.build({}), host)
    collector.collect()
    collector.take_changes()
    n_ifaces = len(rtnl.dump_stats())
    softnet, socket_files = KeptReads(["/proc/net/softnet_stat"]), KeptReads(SOCKET_FILES)
    measured = [lambda: (collector.collect(), collector.take_changes()), lambda: bare_stats_dump(rtnl),
                softnet, socket_files]
    gc.collect()
    result = {"interfaces": n_ifaces}
    # Hot: back to back, caches warm. Cold: each run after the CPU caches were flushed, as a
    # tick a second apart on a host doing other work finds them. Reality lies in between.
    evictor = CacheEvictor()
    for mode, before in (("hot", None), ("cold", evictor)):
        tick, dump, softnet_s, socket_s = cpu_times(measured, ticks, before)
        reads = dump + softnet_s + socket_s
        result[mode] = {"tick_ms": tick * 1e3, "bare_dump_ms": dump * 1e3, "softnet_ms": softnet_s * 1e3,
                        "socket_files_ms": socket_s * 1e3, "bare_reads_ms": reads * 1e3,
                        "ratio_to_dump": tick / dump, "ratio_to_reads": tick / reads}
    del evictor, before  # its buffer is not the collector's memory
    softnet.close()
    socket_files.close()
    result["proc_net_dev_ms"] = cpu_times([lambda: read_file("/proc/net/dev")], ticks)[0] * 1e3
    wall_start = time.monotonic()
    rss_start = None
    differing = 0
    for i in range(memory_ticks):
        collector.collect()
        collector.take_changes()
        differing += collector.source.stats.differing
        if i == 99:
            gc.collect()
            rss_start = rss_kib()
    gc.collect()
    result.update({
        "changed_per_tick": differing / max(memory_ticks, 1), "memory_ticks": memory_ticks,
        "rss_kib_at_100": rss_start, "rss_kib_at_end": rss_kib(), "memory_run_s": time.monotonic() - wall_start,
    })
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=200, help="ticks timed for the median")
    parser.add_argument("--memory-ticks", type=int, default=10000, help="ticks of the memory run")
    parser.add_argument("--ipv6", action="store_true",
                        help="leave IPv6 on in the namespace (its link-local chatter changes counters every tick)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.ticks, args.memory_ticks)
    raise_on_sigterm()
    print("machine: {0} CPUs, {1}, Python {2}".format(os.cpu_count(), os.uname().release, sys.version.split()[0]))
    for size in args.sizes:
        ns = "ndbench{0}".format(os.getpid())
        start = time.monotonic()
        make_namespace(ns, size, ipv6=args.ipv6)
        made = time.monotonic() - start
        try:
            out = this_script_inside(ns, __file__, ["--ticks", str(args.ticks), "--memory-ticks", str(args.memory_ticks)])
        finally:
            delete_namespace(ns)
        r = json.loads(out.strip().splitlines()[-1])
        print("{interfaces:>6} interfaces (made in {made:.0f} s; /proc/net/dev alone would cost "
              "{proc_net_dev_ms:.3f} ms)".format(made=made, **r))
        for mode in ("hot", "cold"):
            print("  {mode:>4}: tick {tick_ms:.3f} ms CPU; bare reads: rtnetlink stats dump {bare_dump_ms:.3f} ms + "
                  "softnet_stat {softnet_ms:.3f} ms + snmp/snmp6/netstat {socket_files_ms:.3f} ms = {bare_reads_ms:.3f} ms"
                  .format(mode=mode, **r[mode]))
            print("        tick / bare rtnetlink dump {ratio_to_dump:.2f}x, tick / bare reads {ratio_to_reads:.2f}x"
                  .format(**r[mode]))
        print("  interfaces whose counters changed, per tick: {changed_per_tick:.1f}".format(**r))
        print("  memory: {rss_kib_at_100} KiB RSS at tick 100, {rss_kib_at_end} KiB after {memory_ticks} ticks "
              "({memory_run_s:.0f} s)".format(**r))

if __name__ == "__main__":
    sys.exit(main())
