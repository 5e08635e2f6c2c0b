"""Where tracefs is mounted, and the files of one trace event (its id and its format).

tracefs is root-only and may not be mounted at all (`mount -t tracefs nodev /sys/kernel/tracing`);
readers here raise OSError and callers say which of the two it was.
"""

import os
import subprocess

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


def mount(point=DEFAULT_MOUNT):
    """Mount tracefs at `point` (root only): None when done, else why not (mount's own words)."""
    done = subprocess.run(["mount", "-t", "tracefs", "nodev", point], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stderr.strip() or "mount exited {0}".format(done.returncode))


def unmount(point=DEFAULT_MOUNT):
    """Unmount tracefs at `point`: None when done, else why not."""
    done = subprocess.run(["umount", point], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stderr.strip() or "umount exited {0}".format(done.returncode))


class MountedForNow:
    """tracefs for the length of a `with` block: mounted at DEFAULT_MOUNT when it is not (and
    this process is root), unmounted again after, so the machine is left as found. `note` says
    what was done, or why it could not be (None when tracefs was there already or not wanted)."""

    def __init__(self, wanted=True):
        self.wanted = wanted
        self.mounted = False
        self.note = None

    def __enter__(self):
        if self.wanted and os.geteuid() == 0 and find_root() is None:
            failed = mount()
            self.mounted = failed is None
            self.note = ("tracefs was not mounted: mounted it at {0} for this run (the drop reasons' names are "
                         "read from it) and unmounted it after".format(DEFAULT_MOUNT) if self.mounted else
                         "tracefs is not mounted and mounting it failed ({0})".format(failed))
        return self

    def __exit__(self, *exc):
        if self.mounted:
            self.mounted = False
            failed = unmount()
            if failed:
                self.note = "tracefs was mounted at {0} for this run and could not be unmounted: {1}".format(
                    DEFAULT_MOUNT, failed)
        return False
