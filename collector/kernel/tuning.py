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

# Subsets of SYSCTL_KEYS, in its order, each for a reason:
# the tuning chart's: the numbers (a chart value is a number, the masks are text), but
# dev_weight, which no alarm and no diagnosis reads;
CHARTED_KEYS = tuple(k for k in SYSCTL_KEYS if k in NUMERIC_KEYS and k != "dev_weight")
# the advisor's: what the diagnosis and the recommendations read (the charted ones, and
# rps_default_mask, which the RPS remedy sets; flow_limit_cpu_bitmap and dev_weight it never reads).
ADVISOR_KEYS = CHARTED_KEYS + ("rps_default_mask",)


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


def read_rx_queues(hostfs, device):
    """[(queue, rps_cpus text, rps_flow_cnt)] of the device's RX queues in queue order (rx-2
    before rx-10); the text or the count is None where unreadable or garbled; [] when the device
    has no RX queues or is gone. The one reader of the RPS files: the core asks it whether RPS is
    on, the advisor for the masks as the kernel shows them."""
    base = "sys/class/net/" + device + "/queues"
    queues = [q for q in hostfs.listdir(base) if q.startswith("rx-") and q[3:].isdigit()]
    out = []
    for queue in sorted(queues, key=lambda q: int(q[3:])):
        flow = hostfs.read_value(base, queue, "rps_flow_cnt")
        try:
            flow = int(flow) if flow is not None else None
        except ValueError:
            flow = None
        out.append((queue, hostfs.read_value(base, queue, "rps_cpus"), flow))
    return out


def rps_enabled(queues):
    """Whether any of read_rx_queues()'s queues steers to a CPU."""
    return any(parse_cpu_mask(mask) for _queue, mask, _flow in queues)
