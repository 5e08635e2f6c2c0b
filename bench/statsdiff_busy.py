#!/usr/bin/env python3
"""What the interface counters cost to diff when some or all interfaces count every tick.

collector_tick.py measures idle interfaces, where a dump is byte for byte the last one. Here
dumps are built as the kernel sends them (equal-size RTM_NEWSTATS messages in buffers of 139,
NLMSG_DONE last; tests/stats_dumps.py, which the tests use too), a share of the interfaces count a packet
between dumps, and the CPU time of statsdiff.StatsDiff.update() is printed against a plain
full parse of the same buffers (what the collector did before StatsDiff) with the changes
worked out the same way. No kernel, no root: it isolates the Python side.

    python3 bench/statsdiff_busy.py
    python3 bench/statsdiff_busy.py --interfaces 10000 --dumps 50
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from netdrops_collector.kernel import netlink, statsdiff  # noqa: E402
from stats_dumps import FakeDump  # noqa: E402

SHARES = (0.0, 0.01, 0.1, 0.5, 1.0)
MESSAGES_PER_BUFFER = 139  # what a 32 KiB dump buffer holds on this kernel


def plain_full_parse(buffers, current):
    """Parse every buffer, compare every interface: the cost without StatsDiff."""
    counters = {}
    for buf in buffers:
        netlink.parse_stats_buffer(buf, counters)
    changed = [(k, current.get(k), c) for k, c in counters.items() if current.get(k) != c]
    current.clear()
    current.update(counters)
    return changed


def measure(n_ifaces, share, dumps):
    """(StatsDiff ms, plain parse ms) per dump, median over `dumps` dumps."""
    ifaces = {i: [0] * 25 for i in range(1, n_ifaces + 1)}
    cuts = list(range(MESSAGES_PER_BUFFER, n_ifaces, MESSAGES_PER_BUFFER))
    diff, current = statsdiff.StatsDiff(), {}
    diff.update(FakeDump(ifaces, cuts).recv_chunk)
    plain_full_parse(FakeDump(ifaces, cuts).buffers, current)
    keys = sorted(ifaces)
    diff_times, plain_times = [], []
    for _ in range(dumps + 2):  # the first two let StatsDiff learn whether the host is busy
        for key in random.sample(keys, int(n_ifaces * share)):
            ifaces[key][0] += 1
        dump = FakeDump(ifaces, cuts)
        buffers = list(dump.buffers)
        start = time.process_time()
        diff.update(dump.recv_chunk)
        diff_times.append(time.process_time() - start)
        start = time.process_time()
        plain_full_parse(buffers, current)
        plain_times.append(time.process_time() - start)
    median = lambda values: sorted(values[2:])[len(values[2:]) // 2] * 1e3  # noqa: E731
    return median(diff_times), median(plain_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interfaces", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--dumps", type=int, default=40, help="dumps timed per share")
    args = parser.parse_args()
    print("machine: {0} CPUs, Python {1}".format(os.cpu_count(), sys.version.split()[0]))
    for n in args.interfaces:
        for share in SHARES:
            diff_ms, plain_ms = measure(n, share, args.dumps)
            print("{0:>6} interfaces, {1:>4.0%} counting: StatsDiff {2:7.3f} ms, plain full parse {3:7.3f} ms "
                  "({4:.2f}x)".format(n, share, diff_ms, plain_ms, diff_ms / plain_ms))


if __name__ == "__main__":
    sys.exit(main())
