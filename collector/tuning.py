"""The receive-path tuning in force: net.core sysctls and per-interface RPS masks."""

SYSCTL_KEYS = (
    "netdev_max_backlog",
    "netdev_budget",
    "netdev_budget_usecs",
    "rmem_default",
    "rmem_max",
    "wmem_default",
    "wmem_max",
    "rps_sock_flow_entries",
    "dev_weight",
    "flow_limit_cpu_bitmap",
    "rps_default_mask",
)

# Keys whose value is a number; the others are CPU masks (hex text).
NUMERIC_KEYS = frozenset(SYSCTL_KEYS) - {"flow_limit_cpu_bitmap", "rps_default_mask"}


def sysctl_path(key):
    return "proc/sys/net/core/" + key


def parse_sysctl_value(key, text):
    """Numeric sysctls -> int, masks -> stripped text; None for an empty or garbled value."""
    if text is None:
        return None
    text = text.strip()
    if key in NUMERIC_KEYS:
        try:
            return int(text.split()[0])
        except (ValueError, IndexError):
            return None
    return text or None


def read_sysctls(hostfs, keys=SYSCTL_KEYS):
    """{key: value}; a key the kernel does not have here (old kernel, child namespace) is None."""
    out = {}
    for key in keys:
        try:
            out[key] = parse_sysctl_value(key, hostfs.kept_file(sysctl_path(key)).read_text())
        except OSError:
            out[key] = None
    return out


def parse_cpu_mask(text):
    """'00000000,0000000f' -> int bit mask (CPU0 = bit 0); None when garbled."""
    if text is None:
        return None
    try:
        return int(text.strip().replace(",", "") or "0", 16)
    except ValueError:
        return None


def format_cpu_mask(mask, ncpus):
    """int mask -> the comma-separated 32-bit groups the kernel takes on machines with >32 CPUs."""
    groups = max(1, (ncpus + 31) // 32)
    words = ["{0:08x}".format((mask >> (32 * i)) & 0xFFFFFFFF) for i in reversed(range(groups))]
    if groups == 1:
        return "{0:x}".format(mask)
    return ",".join(words)


def read_rps(hostfs, device):
    """{queue: (rps_mask int, rps_flow_cnt int)} for the device's RX queues."""
    base = "sys/class/net/" + device + "/queues"
    out = {}
    for queue in sorted(hostfs.listdir(base)):
        if not queue.startswith("rx-"):
            continue
        mask = parse_cpu_mask(hostfs.read_value(base, queue, "rps_cpus"))
        flow = hostfs.read_value(base, queue, "rps_flow_cnt")
        try:
            flow = int(flow) if flow is not None else None
        except ValueError:
            flow = None
        out[queue] = (mask, flow)
    return out


def rps_enabled(rps):
    return any(mask for mask, _flow in rps.values() if mask)
