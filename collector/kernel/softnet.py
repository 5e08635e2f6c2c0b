"""/proc/net/softnet_stat: per-CPU backlog counters, in every layout the kernel has had.

One row per online CPU, every field 32-bit hex. Columns (1-based):
  1 processed, 2 dropped (backlog full / flow limit), 3 time_squeeze, 4-8 zero, 9 cpu_collision,
  10 received_rps (2.6.35), 11 flow_limit_count (3.11), 12 backlog length and 13 CPU id (5.10,
  commit 7d58e6555870), 14 input_qlen and 15 process_qlen (6.4).
So a row has 9, 10, 11, 13 or 15 fields. Without column 13 the row number stands in for the CPU
id, which is wrong once a CPU is offline; `cpu_id_exact` says which one a row carries.
"""

import collections

from ..errors import ParseError

SOFTNET_PATH = "proc/net/softnet_stat"

SoftnetRow = collections.namedtuple(
    "SoftnetRow",
    "cpu cpu_id_exact processed dropped time_squeeze received_rps flow_limit_count "
    "backlog_len input_qlen process_qlen",
)

# Field counts the kernel has produced; anything else is a torn or foreign line.
KNOWN_WIDTHS = (9, 10, 11, 13, 15)


def parse_softnet(text, source=SOFTNET_PATH):
    """Parse the file's text into SoftnetRow tuples (gauges absent on a layout are None)."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        width = len(fields)
        if width not in KNOWN_WIDTHS and width < 15:
            raise ParseError(source, "{0} fields, expected one of {1}".format(
                width, ", ".join(map(str, KNOWN_WIDTHS))), lineno)
        # Only the columns a row has and the collector uses are converted (this runs for every
        # CPU every tick); 4-9 are zero or obsolete. Positional, in SoftnetRow's field order.
        try:
            rows.append(SoftnetRow(
                int(fields[12], 16) if width >= 13 else len(rows),
                width >= 13,
                int(fields[0], 16), int(fields[1], 16), int(fields[2], 16),
                int(fields[9], 16) if width >= 10 else None,     # received_rps
                int(fields[10], 16) if width >= 11 else None,    # flow_limit_count
                int(fields[11], 16) if width >= 13 else None,    # backlog length
                int(fields[13], 16) if width >= 15 else None,    # input_qlen
                int(fields[14], 16) if width >= 15 else None,    # process_qlen
            ))
        except ValueError:
            raise ParseError(source, "field is not hexadecimal: {0!r}".format(line.strip()[:80]), lineno)
    if not rows:
        raise ParseError(source, "no CPU rows")
    seen = set()
    for row in rows:
        if row.cpu in seen:
            raise ParseError(source, "CPU {0} appears twice".format(row.cpu))
        seen.add(row.cpu)
    return rows


def parse_cpu_list(text):
    """A kernel CPU list such as '0-3,8,10-11' -> sorted list of ints."""
    cpus = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return sorted(set(cpus))


def read_softnet(hostfs):
    softnet_stat = hostfs.kept_file(SOFTNET_PATH)
    return parse_softnet(softnet_stat.read_text(), softnet_stat.path)


def row_ids_are_guesses(rows, hostfs):
    """True when rows carry no CPU id and some CPU is offline, so row numbers are not CPU ids."""
    if all(r.cpu_id_exact for r in rows):
        return False
    online = hostfs.read_value("sys/devices/system/cpu/online")
    possible = hostfs.read_value("sys/devices/system/cpu/possible")
    if online is None or possible is None:
        return False
    try:
        return parse_cpu_list(online) != parse_cpu_list(possible)
    except ValueError:
        return False
