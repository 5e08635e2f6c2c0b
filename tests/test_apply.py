"""--apply, --dry-run, --verify and --rollback against a machine under --root (tests/test_apply_support.Tree):
files written with the right mode and owner, boot-time conflicts named, all or nothing, a killed run
recovered, rollback byte for byte. Nothing here touches the real /proc, /sys or /etc."""

import contextlib
import json
import os
import pty
import signal
import stat
import subprocess
import threading
import time

import pytest

from netdrops_advisor.apply import persist
from netdrops_advisor.apply.snapshot import SNAPSHOT_FILE

from test_apply_support import (ADVISOR, Tree, advisor, advisor_inprocess, backlog, default_mask, flow_cnt, one_line, rps,
                                sysctl, write_report)

DROPIN = "etc/sysctl.d/90-netdrops.conf"
UDEV = "etc/udev/rules.d/90-netdrops-rps.rules"
STATE = SNAPSHOT_FILE.lstrip("/")

pytestmark = pytest.mark.usefixtures("requires_root")


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path / "root")


@pytest.fixture
def report(tmp_path):
    def make(*recs, **kwargs):
        return write_report(tmp_path / "report{0}.json".format(len(os.listdir(str(tmp_path)))), list(recs), **kwargs)
    return make


def apply(tree, report_path, *extra, **kwargs):
    return advisor("--apply", "--yes", "--root", tree.root, "--report", report_path, *extra, **kwargs)


def rollback(tree, *extra):
    return advisor("--rollback", "--yes", "--root", tree.root, *extra)


# -- the happy path ----------------------------------------------------------------------------

def test_apply_writes_values_and_dropin_then_rollback_restores_byte_for_byte(tree, report):
    before = tree.digest()
    path = report(backlog(), rps("veth0"), default_mask())
    code, out, err = apply(tree, path)
    assert code == 0, err
    assert tree.value("proc/sys/net/core/netdev_max_backlog") == "1000"
    assert tree.value("sys/class/net/veth0/queues/rx-0/rps_cpus") == "3"
    assert tree.value("proc/sys/net/core/rps_default_mask") == "3"
    text = tree.read(DROPIN)
    assert text.startswith(persist.MARKER)
    # every setting says why, right above it
    lines = text.splitlines()
    at = lines.index("net.core.netdev_max_backlog = 1000")
    assert lines[at - 1].startswith("# backlog_overflow: CPU 1 dropped packets")
    assert "net.core.rps_default_mask = 3" in lines
    st = os.stat(tree.path(DROPIN))
    assert stat.S_IMODE(st.st_mode) == 0o644 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(tree.path(STATE)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(tree.path(STATE))).st_mode) == 0o700
    assert not [n for n in os.listdir(tree.path("etc/sysctl.d")) if n.endswith(persist.TEMP_SUFFIX)]
    # each change says why, bpftune style; the veth's RPS lasts through rps_default_mask (6.3+)
    assert "changed net.core.netdev_max_backlog from 2 -> 1000 (backlog_overflow)" in out
    assert "new veths get RPS from net.core.rps_default_mask = 3" in out
    assert not os.path.exists(tree.path(UDEV))
    snap = json.load(open(tree.path(STATE)))
    assert snap["status"] == "applied"
    assert {e["setting"]: e["original"] for e in snap["runtime"]} == {
        "net.core.netdev_max_backlog": "2", "rps_cpus of veth0 rx-0": "0", "net.core.rps_default_mask": "0"}

    code, out, err = rollback(tree)
    assert code == 0, err
    assert "Rolled back" in out
    assert tree.digest() == before   # values, files, modes, owners; var/lib/netdrops is gone too


def test_a_replaced_file_comes_back_byte_for_byte(tree, report):
    # a drop-in of an earlier netdrops version, with odd bytes and mode, that rollback must restore exactly
    old = persist.MARKER + "\n# hand-tuned\r\nnet.core.netdev_budget = 600\n\n\x00tail"
    tree.write(DROPIN, old, mode=0o640)
    os.chown(tree.path(DROPIN), 0, 4)
    before = tree.digest()
    code, _out, err = apply(tree, report(backlog()))
    assert code == 0, err
    text = tree.read(DROPIN)
    assert "net.core.netdev_budget = 600" in text and "net.core.netdev_max_backlog = 1000" in text
    assert rollback(tree)[0] == 0
    assert tree.digest() == before


def test_second_apply_with_nothing_new_changes_nothing_and_says_so(tree, report):
    path = report(backlog(), rps("veth0"), default_mask())
    assert apply(tree, path)[0] == 0
    after_first = tree.digest()
    code, out, _err = apply(tree, path)
    assert code == 0
    assert "Nothing new to change" in out and "net.core.netdev_max_backlog is already 1000" in out
    assert tree.digest() == after_first


def test_a_later_apply_adds_to_the_record_and_rollback_returns_to_before_the_first(tree, report):
    before = tree.digest()
    assert apply(tree, report(backlog()))[0] == 0
    code, _out, err = apply(tree, report(backlog(new="5000", current="1000"), sysctl("net.core.netdev_budget", "600", "300")))
    assert code == 0, err
    text = tree.read(DROPIN)
    assert "net.core.netdev_max_backlog = 5000" in text and "net.core.netdev_budget = 600" in text
    snap = json.load(open(tree.path(STATE)))
    assert {e["setting"]: (e["original"], e["applied"]) for e in snap["runtime"]} == {
        "net.core.netdev_max_backlog": ("2", "5000"), "net.core.netdev_budget": ("300", "600")}
    assert rollback(tree)[0] == 0
    assert tree.digest() == before


def test_dry_run_shows_a_diff_and_changes_nothing(tree, report):
    before = tree.digest()
    code, out, err = advisor("--dry-run", "--root", tree.root, "--report", report(backlog(), rps("veth0")))
    assert code == 1, err
    assert "--- {0}".format(tree.path("proc/sys/net/core/netdev_max_backlog")) in out
    assert "\n-2\n+1000\n" in out and "\n-0\n+3\n" in out
    assert "--- /dev/null\n+++ {0}".format(tree.path(DROPIN)) in out
    assert "+net.core.netdev_max_backlog = 1000" in out
    assert "Dry run: nothing was changed." in out
    assert tree.digest() == before


def test_raise_only_values_are_never_lowered(tree, report):
    tree.write("proc/sys/net/core/netdev_max_backlog", "5000\n")
    before = tree.digest()
    code, out, _err = apply(tree, report(backlog(current="2")))
    assert code == 0
    assert "already above the recommended 1000: netdrops only raises it" in one_line(out)
    assert tree.digest() == before


def test_rps_flow_cnt_rounded_up_by_the_kernel_counts_as_applied(tree, report):
    code, _out, err = apply(tree, report(flow_cnt("eth0", new="10922")))
    assert code == 0, err
    tree.write("sys/class/net/eth0/queues/rx-0/rps_flow_cnt", "16384\n")   # what the kernel shows
    code, out, _err = apply(tree, report(flow_cnt("eth0", new="10922")))
    assert code == 0 and "Nothing new to change" in out


# -- boot-time sources -------------------------------------------------------------------------

@pytest.mark.parametrize("rel, text, winner", [
    ("usr/lib/sysctl.d/99-zz-vendor.conf", "net.core.netdev_max_backlog = 500\n",
     "/usr/lib/sysctl.d/99-zz-vendor.conf line 1"),
    ("etc/sysctl.d/95-tuning.conf", "# old runbook\n-net/core/netdev_max_backlog=300\n",
     "/etc/sysctl.d/95-tuning.conf line 2"),
    ("etc/sysctl.conf", "net.core.netdev_max_backlog = 100\n",
     "/etc/sysctl.conf line 1"),
    ("run/sysctl.d/91-runtime.conf", "net.core.netdev_max_backlog=2\n",
     "/run/sysctl.d/91-runtime.conf line 1"),
])
def test_a_file_that_would_win_at_boot_is_named_and_nothing_changes(tree, report, rel, text, winner):
    tree.write(rel, text)
    before = tree.digest()
    code, _out, err = apply(tree, report(backlog()))
    assert code == 2
    sentence = one_line(err)
    assert "net.core.netdev_max_backlog would go back to" in sentence and winner in sentence
    assert "Nothing was changed." in sentence and len(err.strip().splitlines()) == 1
    assert tree.digest() == before


def test_files_that_lose_at_boot_are_only_noted(tree, report):
    # read before ours, or masked by a same-named file in an earlier directory, or raising higher
    tree.write("usr/lib/sysctl.d/10-early.conf", "net.core.netdev_max_backlog = 500\n")
    tree.write("usr/lib/sysctl.d/95-masked.conf", "net.core.netdev_max_backlog = 7\n")
    tree.write("etc/sysctl.d/95-masked.conf", "# masks the vendor file of the same name\n")
    tree.write("usr/lib/sysctl.d/97-higher.conf", "net.core.netdev_max_backlog = 20000\n")
    code, out, err = apply(tree, report(backlog()))
    assert code == 0, err
    out = one_line(out)
    assert "overrides net.core.netdev_max_backlog = 500 (/usr/lib/sysctl.d/10-early.conf line 1)" in out
    assert "95-masked" not in out
    assert "/usr/lib/sysctl.d/97-higher.conf line 1 sets 20000" in out and "so it stands" in out


def test_boot_precedence():
    found = persist.parse_sysctl_conf("; c\n# c\n-net/core/a.b = 1\n net.core.x=  2 \nnoeq\nnet.*.y = 3\n", "/f")
    assert [(a.key, a.value, a.line) for a in found] == [("net.core.a/b", "1", 3), ("net.core.x", "2", 4)]


def test_a_dropin_not_written_by_netdrops_is_never_replaced(tree, report):
    tree.write(DROPIN, "net.core.netdev_max_backlog = 3000\n")
    before = tree.digest()
    code, _out, err = apply(tree, report(backlog()))
    assert code == 2 and "was not written by netdrops-advisor" in err
    assert tree.digest() == before


# -- RPS persistence without rps_default_mask: a udev rule -------------------------------------

def test_udev_rule_where_the_kernel_has_no_rps_default_mask(tmp_path, report):
    tree = Tree(tmp_path / "old", default_mask=False)
    before = tree.digest()
    code, out, err = apply(tree, report(rps("eth0"), rps("veth0"), flow_cnt("eth0")))
    assert code == 0, err
    rules = tree.read(UDEV)
    assert rules.startswith(persist.MARKER)
    assert 'ACTION=="add", SUBSYSTEM=="net", KERNEL=="eth0", ATTR{queues/rx-0/rps_cpus}="3"' in rules
    assert 'ACTION=="add", SUBSYSTEM=="net", KERNEL=="eth0", ATTR{queues/rx-0/rps_flow_cnt}="16384"' in rules
    assert 'ACTION=="add", SUBSYSTEM=="net", ENV{ID_NET_DRIVER}=="veth", ATTR{queues/rx-0/rps_cpus}="3"' in rules
    assert "every veth added later" in out
    assert not os.path.exists(tree.path(DROPIN))   # no sysctl to keep
    assert rollback(tree)[0] == 0
    assert tree.digest() == before                  # etc/udev/rules.d it created is gone as well


# -- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("rec, words", [
    (sysctl("net.ipv4.ip_forward", "1", "0"), "is not a setting netdrops-advisor changes"),
    (sysctl("kernel.core_pattern", "|/bin/sh", None), "is not a setting netdrops-advisor changes"),
    (rps("veth0", path="/sys/class/net/veth0/../../../../etc/passwd"), "is not an RPS/RFS file"),
    (rps("..", path="/sys/class/net/../queues/rx-0/rps_cpus"), "does not name a valid interface"),
    (rps("nosuch0"), "Interface 'nosuch0' does not exist"),
    (rps("veth0", queue=5), "no such RX queue"),
    (rps("veth0", new="3; reboot"), "is not a valid hex CPU mask"),
    (sysctl("net.core.netdev_budget", "600\nnet.core.x=1"), "is not a valid whole number"),
    (sysctl("net.core.netdev_budget", "600\n"), "is not a valid whole number"),
    (backlog(new="5000"), "Two different values for net.core.netdev_max_backlog"),
])
def test_only_allow_listed_settings_and_valid_values_are_written(tree, report, rec, words):
    before = tree.digest()
    code, _out, err = apply(tree, report(backlog(), rec))
    assert code == 2 and words in err and "Nothing was changed." in err
    assert tree.digest() == before


def test_evidence_of_another_node_is_refused_with_the_host_commands(tree, report):
    before = tree.digest()
    code, out, err = apply(tree, report(backlog(), node="db-7"))
    assert code == 2
    assert "sysctl -w net.core.netdev_max_backlog=1000" in out and "net.core.netdev_max_backlog = 1000" in out
    assert "changes only the machine it runs on" in err and "db-7" in err
    assert tree.digest() == before


def test_inside_an_unprivileged_container_it_refuses_with_the_host_commands(tree, report):
    before = tree.digest()
    code, out, err = apply(tree, report(backlog(), in_container=True))
    assert code == 2 and "sysctl -w net.core.netdev_max_backlog=1000" in out
    assert "inside a container" in err and "on the host" in err
    assert tree.digest() == before


def test_without_a_terminal_and_without_yes_it_refuses(tree, report):
    before = tree.digest()
    code, _out, err = advisor("--apply", "--root", tree.root, "--report", report(backlog()))
    assert code == 2 and "stdin is not a terminal: add --yes" in err
    assert tree.digest() == before


def test_not_root_is_one_sentence_and_exit_2(tree, report, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for args in (("--apply", "--yes", "--report", report(backlog())), ("--rollback", "--yes"), ("--verify",)):
        code, out, err = advisor_inprocess(*(args + ("--root", tree.root)))
        assert code == 2 and "must run as root" in err and len(err.strip().splitlines()) == 1, err


def test_argument_combinations(tree):
    for args in (("--yes",), ("--root", tree.root), ("--rollback", "--apply"), ("--apply", "--json"),
                 ("--apply", "--all-nodes"), ("--verify", "--node", "x"), ("--rollback", "--url", "http://h:1")):
        code, _out, err = advisor(*args)
        assert code == 2 and "usage:" in err, args


# -- all or nothing ----------------------------------------------------------------------------

@contextlib.contextmanager
def read_only(path):
    """`path` (a file or directory) read-only, as sysfs in a container or a read-only /etc is."""
    subprocess.run(["mount", "--bind", path, path], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
        yield
    finally:
        subprocess.run(["umount", path], check=True)


def test_a_read_only_sysfs_file_undoes_the_earlier_writes(tree, report):
    before = tree.digest()
    target = tree.path("sys/class/net/eth0/queues/rx-0/rps_cpus")
    with read_only(target):
        code, _out, err = apply(tree, report(backlog(), flow_cnt("veth0"), rps("eth0")))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Writing 3 to {0} failed: Read-only file system".format(target) in err
    assert "The 2 changes already made were undone; the machine is as it was." in err
    assert tree.digest() == before


def test_a_failed_file_write_undoes_the_runtime_changes(tree, report):
    before = tree.digest()
    with read_only(tree.path("etc/sysctl.d")):
        code, _out, err = apply(tree, report(backlog(), rps("veth0")))
    assert code == 2
    assert "Writing {0} failed: Read-only file system".format(tree.path(DROPIN)) in err
    assert "The 2 changes already made were undone" in err
    assert tree.digest() == before


def test_a_killed_run_leaves_its_snapshot_and_the_next_run_rolls_it_back(tree, report):
    before = tree.digest()
    path = report(backlog(), rps("veth0"), default_mask())
    code, _out, _err = apply(tree, path, kill_at="after-write-2")
    assert code == -signal.SIGKILL
    assert tree.value("proc/sys/net/core/netdev_max_backlog") == "1000"   # two writes were made
    assert tree.value("proc/sys/net/core/rps_default_mask") == "0"        # the third was not
    assert json.load(open(tree.path(STATE)))["status"] == "applying"

    # without --yes and without a terminal: the choice is explained, nothing happens
    code, out, err = advisor("--apply", "--root", tree.root, "--report", path)
    assert code == 2 and "was interrupted" in err and "--rollback" in err and "--yes` to finish it" in err
    assert "not done yet: net.core.rps_default_mask 0 -> 3" in out
    code, out, err = rollback(tree)
    assert code == 0, err
    assert tree.digest() == before


def test_a_run_killed_after_the_snapshot_is_finished_by_the_next_apply(tree, report):
    before = tree.digest()
    path = report(backlog(), rps("veth0"), default_mask())
    code, _out, _err = apply(tree, path, kill_at="after-snapshot")
    assert code == -signal.SIGKILL
    assert tree.digest() != before and not os.path.exists(tree.path(DROPIN))
    code, out, err = apply(tree, path)
    assert code == 0, err
    assert "Finished the interrupted --apply (3 settings, 1 file written)" in out
    assert tree.value("proc/sys/net/core/rps_default_mask") == "3"
    assert "net.core.netdev_max_backlog = 1000" in tree.read(DROPIN)
    assert json.load(open(tree.path(STATE)))["status"] == "applied"
    assert rollback(tree)[0] == 0
    assert tree.digest() == before


def test_rollback_leaves_a_value_someone_else_changed_since(tree, report):
    assert apply(tree, report(backlog()))[0] == 0
    tree.write("proc/sys/net/core/netdev_max_backlog", "4096\n")
    code, out, _err = rollback(tree)
    assert code == 1
    assert "net.core.netdev_max_backlog is 4096 now, not the 1000 netdrops wrote" in one_line(out)
    assert tree.value("proc/sys/net/core/netdev_max_backlog") == "4096"
    assert not os.path.exists(tree.path(DROPIN)) and not os.path.exists(tree.path(STATE))


def test_rollback_with_nothing_to_roll_back(tree):
    before = tree.digest()
    code, out, _err = rollback(tree)
    assert code == 0 and "Nothing to roll back" in out
    assert tree.digest() == before


# -- verify ------------------------------------------------------------------------------------

def test_verify_later_compares_with_the_rates_before_the_apply(tree, report):
    assert apply(tree, report(backlog(), dropped=(0, 40)))[0] == 0
    code, out, err = advisor("--verify", "--root", tree.root, "--window", "0.3")
    assert code == 0, err
    row = [line for line in out.splitlines() if line.startswith("  backlog drops, CPU 1 ")][0]
    assert "4.00/s" in row and row.endswith("pass")
    assert "Verified: every drop rate is now below 0.5/s." in out

    # the (fake) kernel drops again while --verify measures: the table says so, exit 1
    stop = threading.Event()

    def drop():
        dropped = 0
        while not stop.is_set():
            dropped += 5
            rows = ["{0:08x} {1:08x} ".format(16, dropped if cpu == 1 else 0) + " ".join(["00000000"] * 10)
                    + " {0:08x}".format(cpu) for cpu in range(2)]
            tree.write("proc/net/softnet_stat", "\n".join(rows) + "\n")
            time.sleep(0.05)

    thread = threading.Thread(target=drop)
    thread.start()
    try:
        code, out, _err = advisor("--verify", "--root", tree.root, "--window", "1")
    finally:
        stop.set()
        thread.join()
    assert code == 1
    row = [line for line in out.splitlines() if line.startswith("  backlog drops, CPU 1 ")][0]
    assert row.endswith("FAIL") and "Not verified: backlog drops, all CPUs, backlog drops, CPU 1" in one_line(out)
    assert rollback(tree)[0] == 0


def test_verify_without_an_apply_says_what_to_do(tree):
    code, _out, err = advisor("--verify", "--root", tree.root)
    assert code == 2 and "run --apply --verify" in err


# -- asking ------------------------------------------------------------------------------------

def with_terminal(args, answer):
    """Run the advisor with a terminal on stdin, typing `answer`."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(ADVISOR + list(args), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        os.write(master, answer.encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def test_at_a_terminal_it_asks_and_no_means_nothing_changes(tree, report):
    before = tree.digest()
    path = report(backlog())
    code, out, _err = with_terminal(("--apply", "--root", tree.root, "--report", path), "n\n")
    assert code == 1 and "Apply these changes? [y/N]" in out and "Not applied: nothing was changed." in out
    assert tree.digest() == before
    code, out, err = with_terminal(("--apply", "--root", tree.root, "--report", path), "y\n")
    assert code == 0, err
    assert tree.value("proc/sys/net/core/netdev_max_backlog") == "1000"
    code, out, err = with_terminal(("--rollback", "--root", tree.root), "y\n")
    assert code == 0 and "Roll back? [y/N]" in out
    assert tree.digest() == before


def test_at_a_terminal_a_killed_run_can_be_rolled_back(tree, report):
    before = tree.digest()
    path = report(backlog(), rps("veth0"))
    code, _out, _err = apply(tree, path, kill_at="after-write-1")
    assert code == -signal.SIGKILL
    code, out, err = with_terminal(("--apply", "--root", tree.root, "--report", path), "r\n")
    assert code == 0, err
    assert "Roll it back, finish it, or quit? [r/f/Q]" in out and "Rolled back" in out
    assert tree.digest() == before


# -- evidence from another node, gathered ------------------------------------------------------

def test_node_evidence_is_refused_with_its_commands(tree, monkeypatch):
    from netdrops_advisor.apply import apply_cli
    seen = {}

    def gathered(args, paths, remote):
        seen["remote"] = remote
        source = apply_cli.Source([backlog()], [], "child-1", True, False, "(the child's report)\n", 1,
                                  url="http://127.0.0.1:19999")
        return source

    monkeypatch.setattr(apply_cli, "gather_report", gathered)
    before = tree.digest()
    code, out, err = advisor_inprocess("--apply", "--yes", "--root", tree.root, "--node", "child-1")
    assert code == 2 and seen["remote"] is True
    assert "Commands to run as root on node child-1:" in out and "sysctl -w net.core.netdev_max_backlog=1000" in out
    assert "changes only the machine it runs on" in err and "node child-1 (read from http://127.0.0.1:19999)" in err
    assert tree.digest() == before


def test_a_second_run_at_the_same_time_is_refused(tree, report):
    import fcntl
    state_dir = os.path.dirname(tree.path(STATE))
    os.makedirs(state_dir, mode=0o700)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _out, err = apply(tree, report(backlog()))
        assert code == 2 and "Another netdrops-advisor --apply or --rollback is running" in err
    finally:
        os.close(fd)
    assert tree.value("proc/sys/net/core/netdev_max_backlog") == "2"
