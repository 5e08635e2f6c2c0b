"""/proc/stat per-CPU time, to tell a CPU with no time left (tuning cannot help) from one that
only needs a longer queue."""

import collections

# busy: the time receive processing competes with. Nice time is not in it: softirq preempts any
# task, and when softirq work moves to ksoftirqd (a nice-0 thread) the scheduler gives it nearly
# all of a CPU that a nice-19 job fills (a compile at nice 19 is not saturation).
CpuTimes = collections.namedtuple("CpuTimes", "total idle softirq nice")


def parse_proc_stat(text):
    """Text -> {cpu id: CpuTimes} for the `cpuN` lines (the aggregate `cpu` line is skipped).

    Columns: user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    already inside user, so it is not added twice."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        # only ASCII digits, as the kernel writes: int() alone also takes 'cpu+1', 'cpu1_0', '-5'
        if not all(f.isascii() and f.isdigit() for f in [fields[0][3:]] + fields[1:9]):
            continue
        try:
            cpu = int(fields[0][3:])
            values = [int(v) for v in fields[1:9]]
        except ValueError:   # more digits than int() takes
            continue
        values += [0] * (8 - len(values))
        idle = values[3] + values[4]
        out[cpu] = CpuTimes(total=sum(values), idle=idle, softirq=values[6], nice=values[1])
    return out


def utilisation(before, after):
    """{cpu: (busy %, softirq %)} between two parse_proc_stat results; busy leaves idle, iowait
    and nice time out (nice_share() gives the nice time)."""
    out = {}
    for cpu, end in after.items():
        start = before.get(cpu)
        if start is None:
            continue
        total = end.total - start.total
        if total <= 0:
            continue
        nice = end.nice - start.nice
        busy = 100.0 * (total - (end.idle - start.idle) - nice) / total
        out[cpu] = (max(0.0, min(100.0, busy)), 100.0 * (end.softirq - start.softirq) / total)
    return out


def nice_share(before, after):
    """{cpu: % of the time at nice > 0} between two parse_proc_stat results."""
    out = {}
    for cpu, end in after.items():
        start = before.get(cpu)
        total = end.total - start.total if start is not None else 0
        if total > 0:
            out[cpu] = max(0.0, min(100.0, 100.0 * (end.nice - start.nice) / total))
    return out


def read_proc_stat(hostfs):
    return parse_proc_stat(hostfs.read_text("proc/stat"))
