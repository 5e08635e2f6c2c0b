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
import subprocess
import sys
import time


def cpu_times(fns, repeat):
    """Median CPU seconds (process CPU: user + system) of each fn over `repeat` rounds. The
    functions run in turn within each round, so all of them meet the same kernel conditions:
    the cost of a dump of 10,000 veths varies several-fold from one minute to the next."""
    samples = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, samples):
            start = time.process_time()
            fn()
            out.append(time.process_time() - start)
    return [sorted(s)[len(s) // 2] for s in samples]


def bare_stats_dump(rtnl):
    """What the kernel read costs by itself: the request and every recv, nothing parsed."""
    from netdrops_collector import netlink
    import socket
    rtnl.seq += 1
    payload = netlink.IF_STATS_MSG.pack(socket.AF_UNSPEC, 0, 0, 1)
    rtnl.sock.send(netlink.build_request(netlink.RTM_GETSTATS, payload, rtnl.seq))
    while True:
        n = rtnl.sock.recv_into(rtnl.buf)
        # NLMSG_DONE is the last message of the last buffer: its type sits 16 bytes from the end
        # of that buffer (header 16 + errno 4).
        if n >= 20 and rtnl.buf[n - 16] == netlink.NLMSG_DONE and rtnl.buf[n - 15] == 0:
            return


SOCKET_FILES = ("/proc/net/snmp", "/proc/net/snmp6", "/proc/net/netstat")


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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


def make_namespace(name, n_ifaces):
    subprocess.run(["ip", "netns", "add", name], check=True)
    pairs = n_ifaces // 2
    batch = "".join("link add nb{0}a type veth peer name nb{0}b\n".format(i) for i in range(pairs))
    subprocess.run(["ip", "-n", name, "-batch", "-"], input=batch.encode(), check=True)
    ups = "".join("link set nb{0}{1} up\n".format(i, s) for i in range(pairs) for s in "ab")
    subprocess.run(["ip", "-n", name, "-batch", "-"], input=ups.encode(), check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ticks", type=int, default=200, help="ticks timed for the median")
    parser.add_argument("--memory-ticks", type=int, default=10000, help="ticks of the memory run")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.ticks, args.memory_ticks)
    print("machine: {0} CPUs, {1}, Python {2}".format(os.cpu_count(), os.uname().release, sys.version.split()[0]))
    for size in args.sizes:
        ns = "ndbench{0}".format(os.getpid())
        start = time.monotonic()
        make_namespace(ns, size)
        made = time.monotonic() - start
        try:
            out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--inner",
                                  "--ticks", str(args.ticks), "--memory-ticks", str(args.memory_ticks)],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=True)
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
