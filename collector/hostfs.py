"""Paths to the host's /proc and /sys under an optional prefix (Netdata's NETDATA_HOST_PREFIX / -s).

Readers take a HostFS so that a collector in a container can read the host's files, and tests
can point it at a fixture tree.
"""

import os


class HostFS:
    def __init__(self, prefix=""):
        self.prefix = (prefix or "").rstrip("/")

    @classmethod
    def from_env(cls, explicit=None):
        if explicit is not None:
            return cls(explicit)
        return cls(os.environ.get("NETDATA_HOST_PREFIX", ""))

    def path(self, *parts):
        return self.prefix + "/" + "/".join(p.strip("/") for p in parts)

    def read_text(self, *parts):
        with open(self.path(*parts), "r", encoding="ascii", errors="replace") as f:
            return f.read()

    def read_value(self, *parts):
        """One sysfs/procfs value, stripped; None when the file does not exist."""
        try:
            return self.read_text(*parts).strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, *parts):
        return os.path.exists(self.path(*parts))

    def listdir(self, *parts):
        try:
            return os.listdir(self.path(*parts))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def link_target_name(self, *parts):
        """The last component of a symlink's target (sysfs 'master' -> 'bond0'), or None."""
        try:
            return os.path.basename(os.readlink(self.path(*parts)))
        except OSError:
            return None
