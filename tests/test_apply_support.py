"""Helpers for the --apply tests (no tests here): a machine under a temporary directory (/proc/sys,
/sys, /etc, /usr/lib), saved `--json` reports holding chosen recommendations, a digest of a tree
to compare byte for byte, and the advisor run as a subprocess or in-process."""

import contextlib
import io
import json
import os
import socket
import stat
import subprocess
import sys

from netdrops_advisor import cli, render
from netdrops_advisor.diagnose.recommend import Recommendation

ADVISOR = [sys.executable, "-m", "netdrops_advisor.cli"]
KILLED_AT = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "advisor_killed_at.py")]
NEW_BACKLOG = "1000"


class Tree:
    """A 2-CPU machine under `root`: net.core sysctls, a veth and a NIC with one RX queue each,
    Debian's /etc/sysctl.conf (linked in as /etc/sysctl.d/99-sysctl.conf) and a /usr/lib/sysctl.d."""

    def __init__(self, root, backlog=2, default_mask=True):
        self.root = str(root)
        core = {"netdev_max_backlog": backlog, "netdev_budget": 300, "rps_sock_flow_entries": 0}
        if default_mask:
            core["rps_default_mask"] = 0
        for key, value in core.items():
            self.write("proc/sys/net/core/" + key, "{0}\n".format(value))
        self.add_iface("veth0", "veth")
        self.add_iface("eth0", "physical")
        self.write("sys/devices/system/cpu/online", "0-1\n")
        softnet = "".join(" ".join(["00000010", "00000000"] + ["00000000"] * 10 + ["{0:08x}".format(c)]) + "\n"
                          for c in range(2))
        self.write("proc/net/softnet_stat", softnet)
        self.write("etc/sysctl.conf", "# /etc/sysctl.conf - Debian's, all comments\n#net.core.netdev_max_backlog=1\n")
        os.makedirs(self.path("etc/sysctl.d"), exist_ok=True)
        os.symlink("../sysctl.conf", self.path("etc/sysctl.d/99-sysctl.conf"))
        self.write("etc/sysctl.d/README.sysctl", "not a .conf file\n")
        self.write("usr/lib/sysctl.d/50-pid-max.conf", "kernel.pid_max = 4194304\n")

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text, mode=0o644):
        os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        with open(self.path(rel), "w") as f:
            f.write(text)
        os.chmod(self.path(rel), mode)

    def read(self, rel):
        with open(self.path(rel)) as f:
            return f.read()

    def value(self, rel):
        return self.read(rel).strip()

    def add_iface(self, name, kind):
        base = "sys/class/net/" + name
        self.write(base + "/queues/rx-0/rps_cpus", "0\n")
        self.write(base + "/queues/rx-0/rps_flow_cnt", "0\n")
        self.write(base + "/statistics/rx_dropped", "0\n")
        if kind == "veth":
            self.write(base + "/ifindex", "7\n")
            self.write(base + "/iflink", "8\n")
        else:
            os.makedirs(self.path(base + "/device"), exist_ok=True)

    def digest(self):
        return digest(self.root)


def digest(root):
    """{relative path: what it is}: bytes, mode and owner of files, symlink targets, directories."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


# -- recommendations and reports ---------------------------------------------------------------

def backlog(new=NEW_BACKLOG, current="2"):
    return Recommendation(
        id="net.core.netdev_max_backlog", cause="backlog_overflow", kind="sysctl",
        setting="net.core.netdev_max_backlog", path="/proc/sys/net/core/netdev_max_backlog", device=None,
        current=current, new=new, value_type="int",
        reason="CPU 1 dropped packets because its backlog queue was full ({0} packets).".format(current),
        expected_effect="fewer drops", host_only=True, raise_only=True)


def sysctl(setting, new, current=None, value_type="int", raise_only=True):
    return Recommendation(
        id=setting, cause="backlog_overflow", kind="sysctl", setting=setting,
        path="/proc/sys/" + setting.replace(".", "/"), device=None, current=current, new=new,
        value_type=value_type, reason="a test", expected_effect="a test", host_only=True, raise_only=raise_only)


def rps(device, new="3", current="0", queue=0, path=None):
    path = path or "/sys/class/net/{0}/queues/rx-{1}/rps_cpus".format(device, queue)
    return Recommendation(
        id=path, cause="rx_on_one_cpu", kind="sysfs", setting="rps_cpus of {0} rx-{1}".format(device, queue),
        path=path, device=device, current=current, new=new, value_type="cpumask",
        reason="{0} has 1 RX queue and RPS off, so one CPU does its receive work.".format(device),
        expected_effect="spread", host_only=False, raise_only=False)


def flow_cnt(device, new="16384", current="0", queue=0):
    path = "/sys/class/net/{0}/queues/rx-{1}/rps_flow_cnt".format(device, queue)
    return Recommendation(
        id=path, cause="rx_on_one_cpu", kind="sysfs", setting="rps_flow_cnt of {0} rx-{1}".format(device, queue),
        path=path, device=device, current=current, new=new, value_type="int",
        reason="RFS needs a per-queue flow table.", expected_effect="RFS", host_only=False, raise_only=True)


def default_mask(new="3", current="0"):
    return sysctl("net.core.rps_default_mask", new, current, value_type="cpumask", raise_only=False)


def write_report(path, recs, node=None, local=True, in_container=False, dropped=(0, 40), iface_drops=None):
    """A saved `netdrops-advisor --json` report of this machine with these recommendations."""
    doc = dict.fromkeys(render.REPORT_KEYS)
    doc.update({
        "schema": render.SCHEMA, "status": "problems", "exit_code": 1, "node": node or socket.gethostname(),
        "source": {"kind": "kernel", "detail": "a test", "url": None, "netdata_version": None, "requests": 0,
                   "fallback_reason": None},
        "window": {"seconds": 10.0, "start": 0, "end": 10},
        "findings": [{"id": "backlog_overflow", "severity": "problem", "cpus": [1],
                      "interfaces": list(iface_drops or {})}],
        "recommendations": [render.recommendation_to_dict(r) for r in recs],
        "success_criteria": [], "run_on_host": in_container or not local, "notes": [], "alarms": [],
        "evidence": {"host": {"local": local, "in_container": in_container},
                     "cpus": [{"cpu": c, "dropped": d} for c, d in enumerate(dropped)],
                     "interfaces": [{"name": n, "inbound_drops": d} for n, d in (iface_drops or {}).items()],
                     "sockets": {}},
    })
    with open(str(path), "w") as f:
        json.dump(doc, f)
    return str(path)


# -- running the advisor -----------------------------------------------------------------------

def advisor(*args, env=None, cwd=None, timeout=120, stdin=subprocess.DEVNULL, kill_at=None):
    """Run netdrops-advisor; no traceback ever. Returns (exit code, stdout, stderr). kill_at: the
    process SIGKILLs itself at that checkpoint of apply.execute() (tests/advisor_killed_at.py)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    command = ADVISOR if kill_at is None else KILLED_AT + [kill_at]
    proc = subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd, stdin=stdin)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def advisor_inprocess(*args):
    """cli.main in this process (for monkeypatching); returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:
            code = exit_.code
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def one_line(text):
    return " ".join(text.split())
