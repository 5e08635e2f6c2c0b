"""--apply --verify and --rollback on real drops (the drop lab, tests/lab.py).

The lab sets net.core.netdev_max_backlog=2 and restores its own original when it exits. --apply
changes the same global sysctl, so everything happens inside the lab, in this order: drops ->
--apply --verify (2 -> 1000, drops stop) -> --rollback (back to 2, the lab's value) -> the lab
exits and puts back 1000. The real kernel is used (--host-prefix /); /etc and /var/lib are a
temporary tree (--root), so the real /etc/sysctl.d and /var/lib/netdrops are never touched.
"""

import os
import re

from lab import HEAVY, RPS_TARGET_CPU

from test_apply_support import advisor, digest

WINDOW = "5"
BACKLOG = "/proc/sys/net/core/netdev_max_backlog"


def read(path):
    with open(path) as f:
        return f.read().strip()


def rate_row(out, metric):
    """(before, after, result) of one row of the success table --verify prints."""
    for line in out.split("Success criteria (after:", 1)[1].splitlines():
        if line.startswith("  " + metric + "  "):
            cells = re.split(r"\s{2,}", line.strip())
            return _rate(cells[1]), _rate(cells[3]), cells[4]
    raise AssertionError("no row {0!r} in:\n{1}".format(metric, out))


def _rate(text):
    return float(text.replace(",", "").rstrip("/s"))


def test_apply_verify_then_rollback_in_the_drop_lab(drop_lab, tmp_path):
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    (root / "etc/sysctl.d/10-site.conf").write_text("# the site's own settings\nnet.core.somaxconn = 4096\n")
    os.symlink("../sysctl.conf", str(root / "etc/sysctl.d/99-sysctl.conf"))
    (root / "etc/sysctl.conf").write_text("#net.core.netdev_max_backlog = 1\n")
    files_before = digest(str(root))
    where = ("--root", str(root), "--host-prefix", "/")

    drop_lab.run_traffic(HEAVY)
    rps_file = "/sys/class/net/{0}/queues/rx-0/rps_cpus".format(drop_lab.host_ifname)
    values_before = {path: read(path) for path in (BACKLOG, rps_file, "/proc/sys/net/core/rps_default_mask")}
    assert values_before[BACKLOG] == str(HEAVY.backlog)

    code, out, err = advisor("--apply", "--verify", "--yes", "--source", "kernel", "--window", WINDOW, *where,
                             timeout=120)
    print("\n" + out)
    assert code == 0, err
    assert "changed net.core.netdev_max_backlog from 2 -> 1000 (backlog_overflow)" in out
    assert read(BACKLOG) == "1000"
    dropin = (root / "etc/sysctl.d/90-netdrops.conf").read_text()
    assert "\nnet.core.netdev_max_backlog = 1000\n" in dropin
    before, after, result = rate_row(out, "backlog drops, CPU {0}".format(RPS_TARGET_CPU))
    assert before > 5 and after < 0.5 and result == "pass"
    before, after, result = rate_row(out, "inbound drops, {0}".format(drop_lab.host_ifname))
    assert before > 5 and after < 0.5 and result == "pass"
    assert "Verified: every drop rate is now below 0.5/s." in out
    # the kernel's own count agrees, with the same traffic still running
    kernel = drop_lab.measure(3)
    print("lab HEAVY after --apply: veth rx_dropped {0}/s, CPU {1} softnet drops {2}/s".format(
        kernel.rx_dropped / kernel.when, RPS_TARGET_CPU, kernel.softnet_dropped[RPS_TARGET_CPU] / kernel.when))
    assert kernel.rx_dropped / kernel.when < 0.5

    code, out, err = advisor("--rollback", "--yes", *where)
    print(out)
    assert code == 0, err
    assert {path: read(path) for path in values_before} == values_before   # back to the lab's 2, RPS on CPU 1
    assert digest(str(root)) == files_before                                # drop-in and snapshot gone, rest untouched
    assert drop_lab.measure(3).rx_dropped > 0                               # and it drops again
