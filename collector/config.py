"""Collector options: defaults declared once, validated once, shared by both front-ends."""

import fnmatch

from .kernel.links import KINDS
from .kernel.reasons import DEFAULT_SOCKET

DEFAULTS = {
    "update_every": 1,
    # Interfaces of these kinds (or roles) always get their own charts; others once they drop.
    "chart_kinds": ["physical", "bridge", "bond"],
    # Shell-style name patterns that always get their own charts.
    "chart_interfaces": [],
    # Shell-style name patterns never charted per interface (still counted in drops_by_kind).
    "exclude_interfaces": ["lo"],
    # auto (rtnetlink, /proc/net/dev if that fails), netlink, or procfs.
    "interface_source": "auto",
    # How often (seconds) the sysctls and the charted interfaces' RPS masks are re-read.
    "tuning_every": 30,
    # Upper bound on interfaces with their own charts, so a storm of drops cannot flood Netdata.
    "max_interface_charts": 500,
    # Read /proc and /sys under this prefix (Netdata's NETDATA_HOST_PREFIX when unset).
    "host_prefix": None,
    # Count the kernel's drop reasons (skb:kfree_skb): auto (when root, or through the helper), or off.
    "drop_reasons": "auto",
    # The root helper's socket, for a collector that does not run as root.
    "drop_reasons_socket": DEFAULT_SOCKET,
}

SOURCES = ("auto", "netlink", "procfs")
DROP_REASONS = ("auto", "off")


class ConfigError(ValueError):
    pass


def _str_list(key, value):
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError("{0} must be a list of strings".format(key))
    return list(value)


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("{0} must be a whole number of 1 or more, not {1!r}".format(key, value))
    return value


def build(options):
    """Merge user options over DEFAULTS and validate; unknown keys that are not framework keys
    are rejected so a typo does not silently fall back to a default."""
    cfg = dict(DEFAULTS)
    for key, value in (options or {}).items():
        if key not in DEFAULTS:
            continue  # framework keys (name, priority, autodetection_retry, ...) are not ours
        cfg[key] = value
    cfg["update_every"] = _positive_int("update_every", cfg["update_every"])
    cfg["tuning_every"] = _positive_int("tuning_every", cfg["tuning_every"])
    cfg["max_interface_charts"] = _positive_int("max_interface_charts", cfg["max_interface_charts"])
    for key in ("chart_kinds", "chart_interfaces", "exclude_interfaces"):
        cfg[key] = _str_list(key, cfg[key])
    roles = set(KINDS) | {"bond-slave", "wifi", "loopback"}
    unknown = [k for k in cfg["chart_kinds"] if k not in roles]
    if unknown:
        raise ConfigError("chart_kinds: unknown kind {0}; known: {1}".format(
            ", ".join(unknown), ", ".join(sorted(roles))))
    if cfg["interface_source"] not in SOURCES:
        raise ConfigError("interface_source must be one of {0}".format(", ".join(SOURCES)))
    if cfg["drop_reasons"] not in DROP_REASONS:
        raise ConfigError("drop_reasons must be one of {0}".format(", ".join(DROP_REASONS)))
    if not isinstance(cfg["drop_reasons_socket"], str) or not cfg["drop_reasons_socket"].startswith("/"):
        raise ConfigError("drop_reasons_socket must be an absolute path")
    if cfg["host_prefix"] is not None and not isinstance(cfg["host_prefix"], str):
        raise ConfigError("host_prefix must be a path")
    return cfg


def matches(name, patterns):
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
