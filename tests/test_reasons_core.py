"""The reason counter's parts: the format parser (recorded and live layouts), the descriptor
budget, counters opened on this kernel, and the collector without privilege or helper."""

import os
import subprocess
import sys
import tempfile

import pytest

from lab import SYSTEM_PYTHON
from netdrops_collector.kernel import dropreasons, reasons, tracefs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tracefs")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def test_recorded_618_layout_names_the_receive_reasons():
    numbers = dropreasons.parse_format(fixture("kfree_skb_format_linux618"))
    by_name = {name: n for n, name in numbers.items()}
    assert (by_name["CPU_BACKLOG"], by_name["UNHANDLED_PROTO"], by_name["SOCKET_RCVBUFF"]) == (71, 74, 6)
    assert set(dropreasons.COUNTED_NAMES) <= set(by_name)


def test_a_kernel_before_reasons_says_so():
    with pytest.raises(dropreasons.FormatError, match="5.17"):
        dropreasons.parse_format(fixture("kfree_skb_format_linux510"))


def test_unresolved_symbols_are_skipped_and_none_at_all_is_an_error():
    text = fixture("kfree_skb_format_linux618")
    mixed = text.replace('{ 71, "CPU_BACKLOG" }', '{ SKB_DROP_REASON_CPU_BACKLOG, "CPU_BACKLOG" }')
    assert "CPU_BACKLOG" not in dropreasons.parse_format(mixed).values()
    head, _, _ = text.partition("__print_symbolic(REC->reason,")
    only_symbols = head + '__print_symbolic(REC->reason, { SKB_DROP_REASON_X, "X" })'
    with pytest.raises(dropreasons.FormatError, match="by number"):
        dropreasons.parse_format(only_symbols)


def test_live_format_parses(tracefs_mounted):
    event_id, by_name = reasons.reason_numbers(tracefs_mounted)
    assert event_id > 0 and "CPU_BACKLOG" in by_name


def test_tracefs_mounts_parser():
    text = ("sysfs /sys sysfs rw 0 0\ntracefs /sys/kernel/tracing tracefs rw 0 0\n"
            "tracefs /mnt/my\\040trace tracefs rw 0 0\n")
    assert tracefs.parse_tracefs_mounts(text) == ["/sys/kernel/tracing", "/mnt/my trace"]
    assert tracefs.parse_tracefs_mounts("proc /proc proc rw 0 0\n") == []


@pytest.mark.parametrize("cpus, budget, expected", [
    (2, 4096, len(dropreasons.COUNTED_NAMES)),  # this machine: every reason one by one
    (256, 4096, 15),   # 256 x 17 = 4352 > 4096: the last reason goes into "other"
    (256, 512, 1),     # an open-file limit of 1024: the total and CPU_BACKLOG
    (256, 256, 0),     # the totals only
    (256, 255, None),  # not even the totals: not counted
])
def test_descriptor_budget(cpus, budget, expected):
    by_name = {name: i for i, name in enumerate(dropreasons.COUNTED_NAMES)}
    names = dropreasons.plan(by_name, cpus, budget)
    assert (None if names is None else len(names)) == expected
    if names:
        assert names[0] == "CPU_BACKLOG" and cpus * (1 + len(names)) <= budget


def test_counters_on_this_kernel_respect_the_budget(requires_root, tracefs_mounted):
    cpus = len(reasons.online_cpus())
    counters = reasons.open_local(max_fds=cpus * 3)
    try:
        assert counters.names == dropreasons.COUNTED_NAMES[:2] and counters.fds == cpus * 3
        assert set(counters.read()) == {"cpu_backlog", "socket_rcvbuff", "other"}
    finally:
        counters.close()
    with pytest.raises(reasons.ReasonsUnavailable, match="descriptors"):
        reasons.open_local(max_fds=cpus - 1)


def test_half_the_open_file_limit_bounds_the_counters(requires_root, tracefs_mounted):
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40)); "
            "from netdrops_collector.kernel import reasons; c = reasons.open_local(); "
            "print(c.fds, len(c.names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    fds, names = map(int, out.split())
    cpus = len(reasons.online_cpus())
    assert fds <= 20 and names == 20 // cpus - 1


@pytest.fixture
def world_readable_dir():
    with tempfile.TemporaryDirectory(dir="/tmp") as path:  # pytest's tmp_path is root-only
        os.chmod(path, 0o755)
        yield path


def test_unprivileged_collector_without_helper_charts_everything_else(requires_root, tracefs_mounted,
                                                                        world_readable_dir):
    """As netdata with no helper: no reasons chart, one log line saying why and how."""
    sock = os.path.join(world_readable_dir, "absent.sock")
    # Netdata's interpreter (Debian's python3), with the package as a plugin sees it.
    os.symlink(os.path.join(REPO, "collector"), os.path.join(world_readable_dir, "netdrops_collector"))
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s'); "
            "from netdrops_collector import config, core; "
            "c = core.Collector(config.build({'drop_reasons_socket': sys.argv[1]})); c.collect(); "
            "print('CHARTS', sorted(c.host_charts)); print('REASONS', c.snapshot().reasons)")
    out = subprocess.run(["runuser", "-u", "netdata", "--", "env", "PYTHONPATH=" + world_readable_dir,
                          SYSTEM_PYTHON, "-c", code, sock], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    why = [l for l in lines if l.startswith("drop reasons are not charted")]
    assert len(why) == 1 and sock in why[0] and "netdrops-collector install" in why[0]
    assert "'softnet_dropped'" in lines[-2] and "drop_reasons" not in lines[-2]
    assert lines[-1] == "REASONS None"
