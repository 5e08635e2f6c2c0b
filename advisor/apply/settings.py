"""The only kernel settings --apply ever writes, where they live, and how they are read, written
and compared.

Allow-list: the net.core sysctls netdrops recommends (recommend.REMEDIES) and, per RX queue of
an existing interface, rps_cpus and rps_flow_cnt. Anything else is refused before any write.

Paths are logical (/proc/sys/..., /sys/..., /etc/...). `Paths` maps them to real ones: /proc and
/sys through the collector's HostFS (a prefix), everything else (/etc, /var/lib, /run, /usr/lib)
under `root`. Normally both are '/'; `--root DIR` moves both under DIR, and `--root DIR
--host-prefix /` keeps the real kernel while files and state go under DIR (the tests do this).
"""

import errno
import os
import re
from dataclasses import dataclass

from netdrops_collector.kernel.hostfs import HostFS
from netdrops_collector.kernel.tuning import parse_cpu_mask

from ..diagnose.recommend import REMEDIES

SYSCTL_PREFIX = "net.core."
ALLOWED_SYSCTLS = frozenset(r.setting for r in REMEDIES.values() if r.setting.startswith(SYSCTL_PREFIX))
CPUMASK_SYSCTLS = frozenset({"net.core.rps_default_mask"})
SYSFS_PATH = re.compile(r"^/sys/class/net/([^/]+)/queues/rx-(\d+)/(rps_cpus|rps_flow_cnt)$")
INT_TEXT = re.compile(r"^\d{1,19}$", re.ASCII)   # \d alone takes '١٠٠٠', which write_value cannot encode
MASK_TEXT = re.compile(r"^[0-9a-fA-F]{1,8}(,[0-9a-fA-F]{1,8})*$")
IFNAMSIZ = 16


class SettingError(Exception):
    """One sentence: a setting netdrops will not (or could not) write."""


@dataclass
class Paths:
    root: str        # '' for /
    hostfs: HostFS   # /proc and /sys

    @classmethod
    def make(cls, root=None, host_prefix=None):
        root = normalize_root(root)
        prefix = host_prefix if host_prefix is not None else root
        return cls(root, HostFS(normalize_root(prefix)))

    def real(self, path):
        if path.startswith("/proc/") or path.startswith("/sys/"):
            return self.hostfs.prefix + path
        return self.root + path

    @property
    def real_kernel(self):
        return self.hostfs.prefix == ""


def normalize_root(path):
    if not path:
        return ""
    path = os.path.abspath(path)
    return "" if path == "/" else path.rstrip("/")


# -- the allow-list ----------------------------------------------------------------------------

def sysctl_path(setting):
    return "/proc/sys/" + setting.replace(".", "/")


def valid_ifname(name):
    """What the kernel accepts as an interface name (dev_valid_name) and nothing that could leave
    /sys/class/net: no '/', no '.' or '..', no whitespace or ':'."""
    if not name or len(name) >= IFNAMSIZ or name in (".", ".."):
        return False
    return not any(c in name for c in "/:") and not any(c.isspace() for c in name) and "\0" not in name


def check_target(rec, paths):
    """Raise SettingError unless `rec` names an allowed setting that exists here.
    Returns the value type ("int" or "cpumask")."""
    if rec.kind == "sysctl":
        if rec.setting not in ALLOWED_SYSCTLS:
            raise SettingError("{0} is not a setting netdrops-advisor changes (allowed: {1}).".format(
                rec.setting, ", ".join(sorted(ALLOWED_SYSCTLS))))
        if rec.path != sysctl_path(rec.setting):
            raise SettingError("{0}: path {1!r} is not {2}.".format(rec.setting, rec.path, sysctl_path(rec.setting)))
        value_type = "cpumask" if rec.setting in CPUMASK_SYSCTLS else "int"
        if not os.path.exists(paths.real(rec.path)):
            raise SettingError("This kernel has no {0} ({1} does not exist).".format(rec.setting, paths.real(rec.path)))
    elif rec.kind == "sysfs":
        match = SYSFS_PATH.fullmatch(rec.path or "")
        if not match:
            raise SettingError("{0!r} is not an RPS/RFS file netdrops-advisor writes "
                               "(/sys/class/net/DEV/queues/rx-N/rps_cpus or rps_flow_cnt).".format(rec.path))
        device, _queue, name = match.groups()
        if not valid_ifname(device) or device != rec.device:
            raise SettingError("{0!r} does not name a valid interface ({1!r}).".format(rec.path, rec.device))
        if not os.path.isdir(paths.real("/sys/class/net/" + device)):
            raise SettingError("Interface {0!r} does not exist (any more).".format(device))
        if not os.path.exists(paths.real(rec.path)):
            raise SettingError("{0} does not exist: the interface has no such RX queue.".format(paths.real(rec.path)))
        value_type = "cpumask" if name == "rps_cpus" else "int"
    else:
        raise SettingError("Unknown kind of setting {0!r} for {1}.".format(rec.kind, rec.setting))
    if rec.value_type != value_type:
        raise SettingError("{0}: value type {1!r} is not {2!r}.".format(rec.setting, rec.value_type, value_type))
    check_value(rec.setting, value_type, rec.new)
    return value_type


def check_value(setting, value_type, text):
    pattern = INT_TEXT if value_type == "int" else MASK_TEXT
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise SettingError("{0}: {1!r} is not a valid {2}.".format(
            setting, text, "whole number" if value_type == "int" else "hex CPU mask"))


# -- values ------------------------------------------------------------------------------------

def parse(value_type, text):
    if text is None:
        return None
    if value_type == "cpumask":
        return parse_cpu_mask(text)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def is_flow_cnt(path):
    return path.endswith("/rps_flow_cnt")


def settled(path, value_type, wanted, live):
    """Does the kernel's `live` text hold `wanted`? rps_flow_cnt is rounded up to a power of two."""
    want, have = parse(value_type, wanted), parse(value_type, live)
    if want is None or have is None:
        return False
    if have == want:
        return True
    return is_flow_cnt(path) and want > 0 and have == 1 << (want - 1).bit_length()


def read_value(paths, path):
    """The value as the kernel shows it (stripped text). Raises SettingError."""
    real = paths.real(path)
    try:
        with open(real, "r", encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError as err:
        raise SettingError("Could not read {0}: {1}.".format(real, _why(err)))


def write_value(paths, path, text):
    """Write one value the way `sysctl -w` and `echo >` do (no file is ever created), then read it
    back. Raises SettingError naming the file and the kernel's reason."""
    real = paths.real(path)
    try:
        fd = os.open(real, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    except OSError as err:
        raise SettingError("Writing {0} to {1} failed: {2}.".format(text, real, _why(err)))
    try:
        os.write(fd, (text + "\n").encode("ascii"))
    except OSError as err:
        raise SettingError("Writing {0} to {1} failed: {2}.".format(text, real, _why(err)))
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return read_value(paths, path)


def _why(err):
    """The kernel's reason in words, with what it usually means for these files."""
    text = err.strerror or str(err)
    hints = {
        errno.EINVAL: "the kernel refused the value (for an RPS mask: only isolated or offline CPUs?)",
        errno.EOVERFLOW: "the mask names CPUs this machine does not have",
        errno.EROFS: "the file system is read-only (a container?)",
        errno.EPERM: "not permitted (a container without CAP_NET_ADMIN / CAP_SYS_ADMIN?)",
        errno.ENOENT: "it does not exist (the device went away?)",
        errno.ENODEV: "the device went away",
    }
    hint = hints.get(err.errno)
    return "{0} ({1})".format(text, hint) if hint else text
