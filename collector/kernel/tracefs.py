"""Where tracefs is mounted, and the files of one trace event (its id and its format).

tracefs is root-only and may not be mounted at all (`mount -t tracefs nodev /sys/kernel/tracing`);
readers here raise OSError and callers say which of the two it was.
"""

import os

MOUNTS_PATH = "/proc/self/mounts"
DEFAULT_MOUNT = "/sys/kernel/tracing"
# Before 4.1 tracefs lived inside debugfs; debugfs may still show it there.
MOUNT_POINTS = (DEFAULT_MOUNT, "/sys/kernel/debug/tracing")


def parse_tracefs_mounts(text):
    """Mount points of tracefs in a /proc/mounts text, in the order listed."""
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "tracefs":
            points.append(fields[1].replace("\\040", " "))
    return points


def find_root(mounts_path=MOUNTS_PATH):
    """The tracefs mount to use, or None when tracefs is not mounted."""
    try:
        with open(mounts_path) as f:
            points = parse_tracefs_mounts(f.read())
    except OSError:
        return None
    for point in MOUNT_POINTS + tuple(points):
        if point in points:
            return point
    return None


def event_path(root, system, event, name):
    return os.path.join(root, "events", system, event, name)


def read_event(root, system, event):
    """(tracepoint id, format text) of one event; OSError when it is missing or unreadable."""
    with open(event_path(root, system, event, "id")) as f:
        event_id = int(f.read().strip())
    with open(event_path(root, system, event, "format")) as f:
        return event_id, f.read()
