"""--apply on the real kernel's RPS files of veths this test creates (--root DIR --host-prefix /:
the real /sys, files and state under DIR). No global sysctl is written here, so no drop lab is
needed: only the test's own interfaces change.

- Interface names full of shell metacharacters are written, kept and rolled back, and nothing runs:
  no program is started at all, and the commands hidden in the names leave no trace.
- A value the kernel refuses (an RPS mask naming CPUs this machine does not have) stops the apply
  halfway: the earlier writes are undone and the sentence names the file and the kernel's reason.
"""

import os
import subprocess

import pytest

from netdrops_collector.kernel.tuning import format_cpu_mask
from netdrops_collector.kernel.softnet import parse_cpu_list

from test_apply_support import advisor, advisor_inprocess, digest, flow_cnt, rps, write_report

# dev_valid_name() refuses only '/', ':' and whitespace: all of these are interface names.
NAMES = ("nd$(id>P1)", "nd`id>P2`", "nd;id>P3&'", "nd|id>P4")
TRACES = ("P1", "P2", "P3", "P4")

pytestmark = pytest.mark.usefixtures("requires_root")


def queue_file(name, what="rps_cpus"):
    return "/sys/class/net/{0}/queues/rx-0/{1}".format(name, what)


def read(path):
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def veths():
    """Two veth pairs with hostile names in this namespace (both ends here), deleted afterwards."""
    pairs = ((NAMES[0], NAMES[1]), (NAMES[2], NAMES[3]))
    for name, _peer in pairs:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    try:
        for name, peer in pairs:
            subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer], check=True,
                           capture_output=True)
        yield [name for name, _peer in pairs]
    finally:
        for name, _peer in pairs:
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.fixture
def root(tmp_path):
    """Where /etc and /var/lib go; the kernel is the real one."""
    path = tmp_path / "root"
    for rel in ("etc/sysctl.d", "var/lib"):
        (path / rel).mkdir(parents=True)
    return str(path)


def no_process_may_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("netdrops-advisor started a program: {0!r}".format(args[:1]))
    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    for name in ("system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve",
                 "execvp", "execvpe", "spawnv", "spawnve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


def assert_no_traces(*dirs):
    for directory in dirs:
        for trace in TRACES:
            assert not os.path.exists(os.path.join(directory, trace)), (directory, trace)


def test_interface_names_with_shell_metacharacters_run_nothing(veths, root, tmp_path, monkeypatch):
    first, second = veths
    report = write_report(tmp_path / "report.json", [rps(first, "3"), flow_cnt(first, "10922"), rps(second, "1")])
    before = digest(root)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    # the diff shows the names as they are (a subprocess: the real command line)
    code, out, err = advisor("--dry-run", "--root", root, "--host-prefix", "/", "--report", report, cwd=str(work))
    assert code == 1, err
    assert "--- {0}".format(queue_file(first)) in out and "--- {0}".format(queue_file(second)) in out

    no_process_may_start(monkeypatch)
    code, out, err = advisor_inprocess("--apply", "--yes", "--root", root, "--host-prefix", "/", "--report", report)
    assert code == 0, err
    assert read(queue_file(first)) == "3" and read(queue_file(second)) == "1"
    assert read(queue_file(first, "rps_flow_cnt")) == "16384"   # the kernel rounds up to a power of two
    # kept by a udev rule that matches every veth by driver: no hostile name in a rules file
    with open(os.path.join(root, "etc/udev/rules.d/90-netdrops-rps.rules")) as f:
        rules = f.read()
    assert 'ENV{ID_NET_DRIVER}=="veth", ATTR{queues/rx-0/rps_cpus}="3"' in rules
    assert not any(name in rules for name in NAMES)

    code, out, err = advisor_inprocess("--rollback", "--yes", "--root", root, "--host-prefix", "/")
    assert code == 0, err
    assert read(queue_file(first)) == "0" and read(queue_file(second)) == "0"
    assert read(queue_file(first, "rps_flow_cnt")) == "0"
    assert digest(root) == before
    assert_no_traces(str(work), root, str(tmp_path), "/")


def test_a_value_the_kernel_refuses_undoes_the_earlier_writes(veths, root, tmp_path):
    first, second = veths
    with open("/sys/devices/system/cpu/possible") as f:
        ncpus = max(parse_cpu_list(f.read().strip())) + 1
    beyond = format_cpu_mask(1 << ncpus, ncpus + 1)     # a CPU this machine cannot have
    report = write_report(tmp_path / "report.json",
                          [rps(first, "3"), flow_cnt(first, "4096"), rps(second, beyond)])
    before = digest(root)
    code, out, err = advisor("--apply", "--yes", "--root", root, "--host-prefix", "/", "--report", report,
                             cwd=str(tmp_path))
    print("\n" + err.strip())
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Writing {0} to {1} failed".format(beyond, queue_file(second)) in err
    assert "Value too large for defined data type" in err or "Invalid argument" in err
    assert "The 2 changes already made were undone; the machine is as it was." in err
    assert read(queue_file(first)) == "0" and read(queue_file(first, "rps_flow_cnt")) == "0"
    assert read(queue_file(second)) == "0"
    assert digest(root) == before   # no snapshot, no files, var/lib/netdrops gone
    assert_no_traces(str(tmp_path))
