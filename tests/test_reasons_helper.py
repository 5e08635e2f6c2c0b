"""The drop-reasons helper as installed: its own unit files, run the way systemd would run them
(systemd-socket-activate --seqpacket -a, the unit's ExecStart under the unit's capability bounding
set and no_new_privs), the socket as the socket unit makes it, and clients running as `netdata`
and `nobody`; then the external plugin under a real Netdata 1.37 counting drops through it."""

import configparser
import contextlib
import grp
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import unavailable

from netdatad import session_pids
from netdrops_collector.kernel import reasons
from test_collector_netdata import data_sum

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKET_UNIT = "netdrops-reasons.socket"
SERVICE_UNIT = "netdrops-reasons@.service"

# A client as Netdata's plugin is one: the installed collector copy, Netdata's python, no privilege.
CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from netdrops_collector.kernel import reasons
try:
    counters = reasons.from_helper(sys.argv[2])
except reasons.ReasonsUnavailable as error:
    print(error)
    sys.exit(3)
print(json.dumps({"names": counters.names, "fds": counters.fds, "counts": counters.read()}), flush=True)
sys.stdin.readline()  # the test makes its drops meanwhile
print(json.dumps(counters.read()), flush=True)
"""


def unit(path):
    """{(section, key): [values]} of a unit file (keys may repeat)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif line and not line.startswith(("#", ";")):
                key, _eq, value = line.partition("=")
                values.setdefault((section, key), []).append(value)
    return values


def one(settings, section, key):
    assert len(settings.get((section, key), [])) == 1, (section, key, settings.get((section, key)))
    return settings[(section, key)][0]


def confined(service):
    """The service's ExecStart, wrapped the way its unit confines it (prlimit and setpriv stand
    in for systemd: open-file limit, bounding set, no inheritable capabilities, no_new_privs)."""
    caps = one(service, "Service", "CapabilityBoundingSet").split()
    assert one(service, "Service", "NoNewPrivileges") == "yes"
    nofile = int(one(service, "Service", "LimitNOFILE"))
    bounding = ",".join(["-all"] + ["+" + c.lower()[len("cap_"):] for c in caps])
    return ["prlimit", "--nofile={0}:{0}".format(nofile), "--",
            "setpriv", "--no-new-privs", "--bounding-set", bounding, "--inh-caps", "-all"] + \
        shlex.split(one(service, "Service", "ExecStart"))


@pytest.fixture
def installed():
    """`netdrops-collector install --mode plugin` into directories the netdata user can reach;
    the helper's units land beside the library (LIB/systemd). Uninstalled after."""
    if os.geteuid() != 0:
        unavailable("needs root")
    root = tempfile.mkdtemp(prefix="netdrops-helper-")
    os.chmod(root, 0o755)
    dirs = {k: os.path.join(root, k) for k in ("plugins", "pythond", "config", "lib")}
    args = [a for k, d in dirs.items() for a in ("--{0}-dir".format(k), d)]
    done = subprocess.run(["netdrops-collector", "install", "--mode", "plugin", "--netdata-version", "1.37"] + args,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nothing was enabled" in done.stderr  # one sentence: these units are not this host's
    dirs["units"] = os.path.join(dirs["lib"], "systemd")
    dirs["root"] = root
    yield dirs
    subprocess.run(["netdrops-collector", "uninstall"] + args, check=True, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def activated(units_dir, sock, command=None):
    """The socket unit's socket at `sock` served by the service unit's confined ExecStart, one
    process per connection, as systemd-socket-activate does for Accept=yes. Yields the
    activator; on leaving, checks that no helper process was left behind."""
    socket_unit = unit(os.path.join(units_dir, SOCKET_UNIT))
    assert one(socket_unit, "Socket", "Accept") == "yes"
    service = unit(os.path.join(units_dir, SERVICE_UNIT))
    log = open(sock + ".log", "w+")
    proc = subprocess.Popen(["systemd-socket-activate", "--seqpacket", "-a", "-l", sock] + (command or confined(service)),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None and time.monotonic() < deadline, "no socket from systemd-socket-activate"
            time.sleep(0.05)
        os.chown(sock, 0, grp.getgrnam(one(socket_unit, "Socket", "SocketGroup")).gr_gid)
        os.chmod(sock, int(one(socket_unit, "Socket", "SocketMode"), 8))
        proc.log = log
        yield proc
        deadline = time.monotonic() + 10
        while session_pids(proc.pid) != [proc.pid] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session_pids(proc.pid) == [proc.pid], "helper processes left behind"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        if os.path.exists(sock):
            os.unlink(sock)
    assert session_pids(proc.pid) == []


def exit_codes(activator):
    """The helpers' exit codes, from systemd-socket-activate's 'Child N died with code C' lines."""
    activator.log.flush()
    activator.log.seek(0)
    return [int(line.rsplit(" ", 1)[1]) for line in activator.log.read().splitlines() if " died with code " in line]


def as_user(user, *args, **kwargs):
    return subprocess.Popen(["runuser", "-u", user, "--", "/usr/bin/python3", "-c", CLIENT] + list(args),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def udp_rcvbuf_errors():
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


@contextlib.contextmanager
def tiny_buffer_socket():
    """A UDP socket on loopback with the smallest receive buffer, that nobody reads."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    sink.bind(("127.0.0.1", 0))
    try:
        yield sink.getsockname()
    finally:
        sink.close()


def send_datagrams(address, count, per_second=None):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(b"x" * 200, address)
            if per_second:
                time.sleep(1.0 / per_second)


def test_unit_files_verify(installed):
    done = subprocess.run(["systemd-analyze", "verify", os.path.join(installed["units"], SOCKET_UNIT),
                           os.path.join(installed["units"], SERVICE_UNIT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    service = unit(os.path.join(installed["units"], SERVICE_UNIT))
    assert shlex.split(one(service, "Service", "ExecStart")) == [os.path.join(installed["lib"], "netdrops-reasons-helper")]


def test_netdata_user_counts_drops_through_the_helper_and_nobody_is_refused(installed, tracefs_mounted):
    sock = os.path.join(installed["root"], "reasons.sock")
    with activated(installed["units"], sock) as activator:
        client = as_user("netdata", installed["lib"], sock)
        first = json.loads(client.stdout.readline())
        assert "SOCKET_RCVBUFF" in first["names"]
        assert first["fds"] == (len(first["names"]) + 1) * len(reasons.online_cpus())
        before = udp_rcvbuf_errors()
        with tiny_buffer_socket() as address:
            send_datagrams(address, 1000)
        kernel = udp_rcvbuf_errors() - before
        out, err = client.communicate("go\n", timeout=30)
        assert client.returncode == 0, err
        counted = json.loads(out)["socket_rcvbuff"] - first["counts"]["socket_rcvbuff"]
        assert kernel > 900, kernel
        assert counted == pytest.approx(kernel, rel=0.1)

        refused = as_user("nobody", installed["lib"], sock)
        out, err = refused.communicate("", timeout=30)
        assert refused.returncode == 3, (out, err)
        assert out.strip() == "{0} refused this user (it is for the netdata group)".format(sock)
        assert exit_codes(activator) == [0]  # nobody never reached a helper


def test_garbage_and_silence_are_refused_with_one_sentence(installed, tracefs_mounted):
    sock = os.path.join(installed["root"], "reasons.sock")
    with activated(installed["units"], sock) as activator:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(b"\x00garbage")
            answer = json.loads(s.recv(65536))
        assert set(answer) == {"error"} and "protocol version 1" in answer["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(json.dumps({"v": 1, "max_fds": 4, "pad": "x" * 4096}).encode())
            assert "longer than" in json.loads(s.recv(65536))["error"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.settimeout(10)
            s.connect(sock)
            started = time.monotonic()
            answer = json.loads(s.recv(65536))
            waited = time.monotonic() - started
        assert answer == {"error": "no request within 5 s"}
        assert 4.5 <= waited < 7, waited
        deadline = time.monotonic() + 5
        while len(exit_codes(activator)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_codes(activator) == [1, 1, 1]


def test_the_units_capabilities_are_needed(installed, tracefs_mounted):
    """Without CAP_PERFMON (a bounding set with nothing) the same helper is refused by the kernel:
    so the unit's set is what makes it work, not root alone."""
    sock = os.path.join(installed["root"], "reasons.sock")
    service = unit(os.path.join(installed["units"], SERVICE_UNIT))
    bare = ["setpriv", "--no-new-privs", "--bounding-set", "-all", "--inh-caps", "-all"] + \
        shlex.split(one(service, "Service", "ExecStart"))
    with activated(installed["units"], sock, bare) as activator:
        client = as_user("netdata", installed["lib"], sock)
        out, _err = client.communicate("", timeout=30)
        assert client.returncode == 3
        assert "perf_event_open was refused" in out
        deadline = time.monotonic() + 5
        while not exit_codes(activator) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_codes(activator) == [1]


def test_helper_is_usage_error_when_not_socket_activated_or_not_root():
    done = subprocess.run([sys.executable, "-m", "netdrops_collector", "reasons-helper"], capture_output=True, text=True)
    if os.geteuid() == 0:
        assert done.returncode == 2 and "not socket-activated" in done.stderr
    done = subprocess.run(["netdrops-collector", "reasons-helper", "--listen", "/etc/hostname"],
                          capture_output=True, text=True)
    if os.geteuid() == 0:
        assert done.returncode == 2 and "is not a socket: not replacing it" in done.stderr
        assert os.path.getsize("/etc/hostname") > 0


# The front-end's configuration, pointing it at the test's helper socket.
FRONT_END_CONFIG = {
    "plugin": ("netdrops.conf", "update_every: 1\ndrop_reasons_socket: {0}\njobs:\n  - name: local\n"),
    "python.d": ("python.d/netdrops.conf", "update_every: 1\nlocal:\n  name: local\n  drop_reasons_socket: {0}\n"),
}


@pytest.mark.parametrize("mode", sorted(FRONT_END_CONFIG))
def test_front_end_as_netdata_charts_reasons_through_the_helper(netdata_factory, tracefs_mounted, mode):
    nd = netdata_factory("reasons", pythond_modules=["netdrops"] if mode == "python.d" else None)
    nd.install_netdrops(mode)
    units = os.path.join(nd.collector_lib_dir, "systemd")
    sock = os.path.join(nd.root, "reasons.sock")
    name, text = FRONT_END_CONFIG[mode]
    nd.write_config_file(name, text.format(sock))
    with activated(units, sock) as activator:
        nd.start()
        nd.wait_chart("netdrops.drop_reasons", timeout=90)
        nd.wait_for(lambda: exit_codes(activator), 10, what="the helper's exit")
        assert exit_codes(activator) == [0]  # the plugin connected once and kept the counters
        with tiny_buffer_socket() as address:
            # A reason's dimension appears when it first counts, and Netdata takes an incremental
            # dimension's first value as its base: the drops before it are not in the chart.
            send_datagrams(address, 20)
            nd.wait_for(lambda: "drop_reasons_socket_rcvbuff" in nd.charts()["netdrops_local.drop_reasons"]["dimensions"],
                        30, what="the socket_rcvbuff dimension")
            time.sleep(3)
            started = time.monotonic()
            before = udp_rcvbuf_errors()
            send_datagrams(address, 2000, per_second=400)
        kernel = udp_rcvbuf_errors() - before
        time.sleep(3)  # the last second's drops reach Netdata
        window = int(time.monotonic() - started) + 3
        assert kernel > 1800, kernel
        counted, _rows = data_sum(nd, "netdrops_local.drop_reasons", "socket_rcvbuff", window)
        assert counted == pytest.approx(kernel, rel=0.1)
        nd.stop()
    assert "drop reasons are not charted" not in nd.log_text()
