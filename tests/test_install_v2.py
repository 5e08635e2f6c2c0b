"""`netdrops-collector install` into the real Netdata v2.11 (../shared/netdata-v2): plugin and
python.d mode, the official Docker image's layout (everything under the /etc/netdata volume, the
host read under `-s PREFIX`) across a re-created container, and upgrades from 1.37's alarm file."""

import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error

import pytest

from netdatad import AGENT_V2, Agent, give_to_netdata
from netdrops_collector import charts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_CONTEXTS = {c.context for c in charts.host_charts()}
V2_HEALTH = os.path.join(REPO, "health.d", "v2", "netdrops.conf")
HEALTH_137 = os.path.join(REPO, "health.d", "netdrops.conf")
# The last main before installs knew v2 upgrades and Docker: its manifests hold absolute paths.
MAIN_BEFORE_V2_INSTALLS = "1a75957b5cfde9a45d58dcbf4685705d9ebc48d8"
# Alarms of the v2 file that attach with no veth chart (host charts and the host's NIC).
V2_HOST_ALARMS = {"netdrops_backlog_exceeded", "netdrops_backlog_fill", "netdrops_budget_exhausted_with_drops",
                  "netdrops_host_inbound_drops"}


def run(*args, env=None):
    return subprocess.run(["netdrops-collector"] + list(args), capture_output=True, text=True, env=env)


def files_under(*roots):
    """Every file and symlink below the roots (paths), to compare before and after."""
    found = set()
    for root in roots:
        for d, subdirs, names in os.walk(root):
            found.update(os.path.join(d, n) for n in names)
            found.update(os.path.join(d, n) for n in subdirs if os.path.islink(os.path.join(d, n)))
    return found


def dirs_under(root):
    return {d for d, _s, _f in os.walk(root)}


def contexts_of(nd):
    return {c["context"] for c in nd.charts().values()}


def wait_host_charts(nd, timeout=90):
    nd.wait_for(lambda: HOST_CONTEXTS <= contexts_of(nd), timeout, what="the netdrops host contexts")


def physical_nics():
    return sorted(d for d in os.listdir("/sys/class/net") if os.path.exists("/sys/class/net/{0}/device".format(d)))


def assert_nic_chart_labels(nd):
    """A physical NIC's iface_drops chart carries the labels the v2 alarms filter on, true to
    the kernel (README, Charts)."""
    nics = physical_nics()
    assert nics, "this machine has no physical NIC to chart"
    chart = nd.wait_chart("netdrops_local.iface_{0}_drops".format(charts.sanitize(nics[0])), timeout=30)
    labels = chart.get("chart_labels") or {}
    assert labels.get("device") == nics[0]
    assert labels.get("kind") == "physical" and labels.get("role") == "physical"
    assert chart["family"] == "physical/" + nics[0]


def latest(nd, chart, dim):
    """The newest collected value of a dimension; None before the first (v2 answers 404 then)."""
    try:
        rows = nd.api("/api/v1/data", {"chart": chart, "dimensions": dim, "after": -10, "points": 10,
                                       "format": "json", "options": "seconds|absolute"})["data"]
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise
    values = [row[1] for row in sorted(rows) if row[1] is not None]
    return values[-1] if values else None


def netdrops_log_lines(nd):
    """Lines of v2's logs that name netdrops or its files (a health syntax error, a plugin failure)."""
    lines = []
    tmp_root = os.path.dirname(nd.root)  # /tmp/netdrops-nd-...: in every path, so left out
    for name in ("daemon.log", "health.log", "collector.log"):
        lines.extend(l for l in nd.log_text(name).splitlines()
                     if "netdrops" in l.replace(tmp_root, "")
                     and ("level=error" in l or "level=warning" in l or "foreach" in l))
    return lines


# -- plugin and python.d mode ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["plugin", "python.d"])
def test_install_on_v2_charts_with_labels_and_uninstall_removes_exactly_it(netdata_v2_factory, mode):
    nd = netdata_v2_factory(mode.replace(".", ""), pythond_modules=["netdrops"] if mode == "python.d" else None)
    ours = (nd.config_dir, nd.plugins_dir, nd.collector_lib_dir)  # the agent's state dirs are its own
    before, dirs_before = files_under(*ours), set().union(*map(dirs_under, ours))
    done = nd.install_netdrops(mode)
    assert "installing for Netdata 2.11 (--netdata-version)" in done.stderr
    installed = files_under(*ours) - before
    if mode == "python.d":
        # v2's python.d.plugin loads user modules from <each NETDATA_USER_PLUGINS_DIRS>/python.d:
        # the instance's plugins dir is the second of [directories] plugins.
        assert os.path.join(nd.plugins_dir, "python.d", "netdrops.chart.py") in installed
    else:
        assert os.path.join(nd.plugins_dir, "netdrops.plugin") in installed
    with open(os.path.join(nd.health_dir, "netdrops.conf"), "rb") as f, open(V2_HEALTH, "rb") as v2:
        assert f.read() == v2.read()
    nd.start()
    wait_host_charts(nd)
    assert_nic_chart_labels(nd)
    budget = int(open("/proc/sys/net/core/netdev_budget").read())
    nd.wait_for(lambda: latest(nd, "netdrops_local.tuning", "netdev_budget") == budget, 30, what="netdev_budget")
    assert netdrops_log_lines(nd) == []
    nd.stop()

    done = run("uninstall", *nd.install_args())
    assert done.returncode == 0, done.stderr
    assert files_under(*ours) == before
    assert set().union(*map(dirs_under, ours)) == dirs_before


def test_version_is_asked_from_the_layouts_own_binary_first(netdata_v2_factory, tmp_path):
    # /usr/sbin/netdata (1.37) is on PATH; the directories named are v2's (dry run: nothing written).
    # v2.11 has python.d.plugin and its framework, but on v2 the default mode is the plugin.
    done = run("install", "--dry-run", "--plugins-dir", AGENT_V2.plugins_dir, "--pythond-dir", AGENT_V2.pythond_dir,
               "--config-dir", str(tmp_path / "etc"), "--lib-dir", str(tmp_path / "lib"))
    assert done.returncode == 0, done.stderr
    assert "installing for Netdata 2.11 ({0} -v, beside the directories)".format(AGENT_V2.binary) in done.stderr
    assert "would write {0}/netdrops.plugin".format(AGENT_V2.plugins_dir) in done.stderr
    assert "netdrops.chart.py" not in done.stderr
    assert "would write {0}".format(tmp_path / "etc/health.d/netdrops.conf") in done.stderr
    # Directories beside no binary fall back to the system's, and say so.
    done = run("install", "--dry-run", "--mode", "plugin", "--plugins-dir", str(tmp_path / "plugins.d"),
               "--config-dir", str(tmp_path / "etc"), "--lib-dir", str(tmp_path / "lib"))
    assert done.returncode == 0, done.stderr
    assert "installing for Netdata 1.37 (/usr/sbin/netdata -v, the system's" in done.stderr
    assert not os.path.exists(tmp_path / "etc")


# -- the official Docker image's layout -----------------------------------------------------------

FAKE_BUDGET = 4242  # a netdev_budget only the prefix has: the charts show it if, and only if,
                    # the collector reads under NETDATA_HOST_PREFIX

# Runs the agent in a private mount namespace where PREFIX/proc and PREFIX/sys are the real procfs
# and sysfs (as the image's /host/proc, /host/sys), with PREFIX's netdev_budget covered by a file
# holding FAKE_BUDGET. v2.11 ignores a prefix whose proc is not procfs ("Ignoring host prefix
# ...: type is not procfs", seen here), so symlinks would not do. The mounts end with the agent.
IN_MOUNT_NAMESPACE = r"""
import ctypes, os, subprocess, sys
prefix, budget, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if ctypes.CDLL(None, use_errno=True).unshare(0x00020000) != 0:  # CLONE_NEWNS
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
for args in (["--make-rprivate", "/"], ["--bind", "/proc", prefix + "/proc"], ["--bind", "/sys", prefix + "/sys"],
             ["--bind", budget, prefix + "/proc/sys/net/core/netdev_budget"]):
    subprocess.run(["mount"] + args, check=True)
os.execv(argv[0], argv)
"""


class ImageLikeAgent(Agent):
    """The real v2.11 started as the official image starts it: `netdata -s /host` (its run.sh),
    the host's /proc and /sys under the prefix."""

    def __init__(self, root):
        Agent.__init__(self, AGENT_V2.name, AGENT_V2.version, AGENT_V2.binary, AGENT_V2.plugins_dir,
                       AGENT_V2.pythond_dir, AGENT_V2.stock_config_dir, AGENT_V2.db)
        self.host_prefix = os.path.join(root, "host")
        for d in ("proc", "sys"):
            os.makedirs(os.path.join(self.host_prefix, d), 0o755)
        self.fake_budget = os.path.join(root, "fake-netdev_budget")
        with open(self.fake_budget, "w") as f:
            f.write("{0}\n".format(FAKE_BUDGET))
        os.chmod(self.fake_budget, 0o644)

    def command(self, config_path, port):
        cmd = Agent.command(self, config_path, port)
        return [sys.executable, "-c", IN_MOUNT_NAMESPACE, self.host_prefix, self.fake_budget,
                cmd[0], "-s", self.host_prefix] + cmd[1:]


def image_like_instance(factory, pythond):
    """A v2 instance laid out like the image: CONFIG (/etc/netdata), lib and cache are the
    volumes. Plugins come from the stock plugins.d and CONFIG/custom-plugins.d only: v2.11's
    default [directories] plugins is `"<plugins dir>" "<built-in config dir>/custom-plugins.d"`
    (`netdata -W get directories plugins`, seen here), which in the image, built for /etc/netdata,
    is "/usr/libexec/netdata/plugins.d" "/etc/netdata/custom-plugins.d"."""
    nd = factory("container", agent=ImageLikeAgent(factory.root), pythond_modules=["netdrops"] if pythond else None)
    with open(nd.config_path) as f:
        conf = [line if not line.strip().startswith("plugins =") else
                '    plugins = "{0}" "{1}/custom-plugins.d"\n'.format(AGENT_V2.plugins_dir, nd.config_dir)
                for line in f]
    nd.write_config_file("netdata.conf", "".join(conf))
    return nd


def recreate_container(nd):
    """What `docker compose up` after a pull does: a new container on the same volumes. The run,
    log and lock dirs start empty; the agent's own plugins dir is the image's."""
    for d in (nd.log_dir, nd.run_dir, os.path.join(nd.root, "lock")):
        shutil.rmtree(d)
        os.mkdir(d, 0o755)
        give_to_netdata(d)


@pytest.mark.parametrize("mode", ["plugin", "python.d"])
def test_docker_layout_survives_a_recreated_container(netdata_v2_factory, tmp_path, mode):
    nd = image_like_instance(netdata_v2_factory, mode == "python.d")
    # The host sees the config volume at another path than the container's /etc/netdata.
    host_volume = tmp_path / "volumes" / "netdataconfig" / "_data"
    host_volume.parent.mkdir(parents=True)
    os.symlink(nd.config_dir, host_volume)
    stock = files_under(AGENT_V2.plugins_dir, AGENT_V2.pythond_dir)
    before = files_under(netdata_v2_factory.root, str(tmp_path))
    volume_before, volume_dirs = files_under(nd.config_dir), dirs_under(nd.config_dir)
    done = run("install", "--docker", "--mode", mode, "--config-dir", str(host_volume))
    assert done.returncode == 0, done.stderr
    assert "installing for Netdata 1.38 and later, v2 included (--docker" in done.stderr

    written = files_under(netdata_v2_factory.root, str(tmp_path)) - before
    rel = sorted(os.path.relpath(p, nd.config_dir) for p in written)
    assert all(p.startswith(nd.config_dir + "/") for p in written), rel  # nothing outside the volume
    front = (["custom-plugins.d/netdrops.plugin", "netdrops.conf"] if mode == "plugin"
             else ["custom-plugins.d/python.d/netdrops.chart.py", "python.d/netdrops.conf"])
    assert set(front + ["health.d/netdrops.conf", "netdrops/install-manifest.json",
                        "netdrops/netdrops_collector/core.py"]) <= set(rel)
    assert {os.path.dirname(p) for p in rel} <= {"custom-plugins.d", "custom-plugins.d/python.d", "python.d",
                                                 "health.d", "", "netdrops", "netdrops/netdrops_collector",
                                                 "netdrops/netdrops_collector/kernel",
                                                 "netdrops/netdrops_collector/frontends",
                                                 "netdrops/netdrops_advisor", "netdrops/netdrops_advisor/sources",
                                                 "netdrops/netdrops_advisor/diagnose",
                                                 "netdrops/netdrops_advisor/apply"}
    for path in written:  # launchers and manifest name no host path
        with open(path, "rb") as f:
            data = f.read()
        assert str(host_volume).encode() not in data and nd.config_dir.encode() not in data, path
    assert files_under(AGENT_V2.plugins_dir, AGENT_V2.pythond_dir) == stock

    nd.start()
    wait_host_charts(nd)
    # Read through the agent's -s prefix (NETDATA_HOST_PREFIX, checked passed on by v2.11).
    nd.wait_for(lambda: latest(nd, "netdrops_local.tuning", "netdev_budget") == FAKE_BUDGET, 30,
                what="netdev_budget from the host prefix")
    nd.stop()

    recreate_container(nd)
    assert files_under(AGENT_V2.plugins_dir, AGENT_V2.pythond_dir) == stock
    nd.start()
    wait_host_charts(nd)
    assert_nic_chart_labels(nd)
    nd.wait_for(lambda: latest(nd, "netdrops_local.tuning", "netdev_budget") == FAKE_BUDGET, 30,
                what="netdev_budget from the host prefix after the re-create")
    assert netdrops_log_lines(nd) == []
    nd.stop()

    # Uninstall from inside the "container" (the volume at its own path) removes exactly it.
    done = run("uninstall", "--docker", "--config-dir", nd.config_dir)
    assert done.returncode == 0, done.stderr
    assert files_under(nd.config_dir) == volume_before
    assert dirs_under(nd.config_dir) == volume_dirs


def test_docker_install_needs_the_volume_directory(tmp_path):
    done = run("install", "--docker", "--config-dir", str(tmp_path / "missing"))
    assert done.returncode == 2 and "names the host directory of the container's /etc/netdata volume" in done.stderr
    done = run("install", "--docker", "--config-dir", str(tmp_path), "--plugins-dir", str(tmp_path))
    assert done.returncode == 2 and "--docker puts everything under --config-dir" in done.stderr
    assert os.listdir(tmp_path) == []


# -- upgrades from 1.37 ---------------------------------------------------------------------------

def main_checkout(dest):
    """The collector of MAIN_BEFORE_V2_INSTALLS as an importable package (plus its data), from git."""
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", MAIN_BEFORE_V2_INSTALLS,
                              "collector", "health.d", "conf.d"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest)
    os.rename(os.path.join(dest, "collector"), os.path.join(dest, "netdrops_collector"))
    return dest


@pytest.mark.parametrize("first_install", ["this version", "main before v2 installs"])
def test_upgrade_from_137_moves_the_edited_alarm_file_aside(netdata_v2_factory, tmp_path, first_install):
    nd = netdata_v2_factory("upgrade")
    ours = (nd.config_dir, nd.plugins_dir, nd.collector_lib_dir)  # the agent's state dirs are its own
    before = files_under(*ours)
    first = ["install", "--mode", "plugin", "--netdata-version", "1.37"] + nd.install_args()
    if first_install == "this version":
        done = run(*first)
    else:
        env = dict(os.environ, PYTHONPATH=main_checkout(str(tmp_path / "main")))
        which = subprocess.run([sys.executable, "-c", "import netdrops_collector; print(netdrops_collector.__file__)"],
                               capture_output=True, text=True, env=env, cwd=str(tmp_path))
        assert which.stdout.startswith(str(tmp_path / "main")), which  # main's code, not this checkout's
        done = subprocess.run([sys.executable, "-c", "import sys; from netdrops_collector.cli import main; "
                               "sys.exit(main())"] + first, capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    health = os.path.join(nd.health_dir, "netdrops.conf")
    # The 1.37 file of the version that installed (main's is older than this checkout's).
    stock_path = HEALTH_137 if first_install == "this version" else os.path.join(str(tmp_path / "main"), "health.d", "netdrops.conf")
    with open(health, "rb") as f, open(stock_path, "rb") as stock:
        assert f.read() == stock.read()
    with open(health, "rb") as f:
        edited = f.read().replace(b"to: sysadmin", b"to: silent")
    assert b"to: silent" in edited and b"foreach" in edited
    with open(health, "wb") as f:
        f.write(edited)

    done = nd.install_netdrops("plugin")  # --netdata-version 2.11
    aside = health + ".1.37-edited"
    assert "moved your Netdata 1.37 alarm file {0} to {1}".format(health, aside) in done.stderr
    with open(aside, "rb") as f:
        assert f.read() == edited
    with open(health, "rb") as f, open(V2_HEALTH, "rb") as v2:
        assert f.read() == v2.read()

    nd.start()
    wait_host_charts(nd)
    loaded = nd.wait_for(lambda: V2_HOST_ALARMS <= {a["name"] for a in nd.alarms().values()} and nd.alarms(),
                         30, what="the v2 alarms")
    alarms = [a for a in loaded.values() if a["name"].startswith("netdrops_")]
    assert all(health in a.get("source", "") for a in alarms), [a.get("source") for a in alarms]
    assert not [a for a in alarms if "cpu" in a["name"]]  # no 1.37 per-CPU (foreach) alarm
    daemon = nd.log_text("daemon.log")
    assert "foreach" not in daemon and "unknown keyword" not in daemon
    assert netdrops_log_lines(nd) == []
    nd.stop()

    # Again: nothing more moves, and an earlier moved-aside file is never overwritten.
    done = nd.install_netdrops("plugin")
    assert "moved your" not in done.stderr and "nothing to change" in done.stderr

    done = run("uninstall", *nd.install_args())
    assert done.returncode == 0, done.stderr
    assert "keeping {0} (your 1.37 alarm file".format(aside) in done.stderr
    assert files_under(*ours) == before | {aside}
    with open(aside, "rb") as f:
        assert f.read() == edited


# -- the OpenMetrics way in: alarms for go.d's prometheus job ------------------------------------

OPENMETRICS_HEALTH = os.path.join(REPO, "health.d", "v2", "netdrops-openmetrics.conf")
GO_D_JOB = os.path.join(REPO, "conf.d", "go.d", "prometheus-netdrops.conf")


def test_openmetrics_mode_installs_only_the_go_d_alarms_and_prints_the_job(netdata_v2_factory):
    nd = netdata_v2_factory("openmetrics")
    ours = (nd.config_dir, nd.plugins_dir, nd.collector_lib_dir)
    before = files_under(*ours)
    done = nd.install_netdrops("openmetrics")
    installed = files_under(*ours) - before
    assert installed == {os.path.join(nd.health_dir, "netdrops-openmetrics.conf"),
                         os.path.join(nd.collector_lib_dir, "install-manifest.json")}
    with open(os.path.join(nd.health_dir, "netdrops-openmetrics.conf"), "rb") as f, \
            open(OPENMETRICS_HEALTH, "rb") as shipped:
        assert f.read() == shipped.read()
    with open(GO_D_JOB) as f:
        assert f.read() in done.stdout  # the job to add, printed; the user's go.d file untouched
    assert os.path.join(nd.config_dir, "go.d", "prometheus.conf") in done.stdout
    assert not os.path.exists(os.path.join(nd.config_dir, "go.d"))
    # The file loads on the real v2.11 without a word (this build has no go.d to chart for it).
    nd.start()
    nd.wait_for(nd.alarms, 30, what="the stock alarms (health has read health.d)")
    assert [l for l in nd.log_text("daemon.log").splitlines() if "Health configuration" in l] == []
    nd.stop()
    done = run("uninstall", *nd.install_args())
    assert done.returncode == 0, done.stderr
    assert files_under(*ours) == before


def test_openmetrics_mode_refuses_netdata_137(tmp_path):
    (tmp_path / "etc").mkdir()
    done = run("install", "--mode", "openmetrics", "--netdata-version", "1.37", "--plugins-dir", str(tmp_path / "p"),
               "--config-dir", str(tmp_path / "etc"), "--lib-dir", str(tmp_path / "lib"))
    assert done.returncode == 2 and "are for Netdata 1.38 and later" in done.stderr
    assert os.listdir(tmp_path) == ["etc"] and os.listdir(tmp_path / "etc") == []


def test_switching_a_plugin_install_to_openmetrics_removes_the_plugin(tmp_path):
    args = ["--plugins-dir", str(tmp_path / "plugins.d"), "--config-dir", str(tmp_path / "etc"),
            "--lib-dir", str(tmp_path / "lib"), "--netdata-version", "2.11"]
    assert run("install", "--mode", "plugin", *args).returncode == 0
    done = run("install", "--mode", "openmetrics", *args)
    assert done.returncode == 0, done.stderr
    left = sorted(os.path.relpath(p, str(tmp_path)) for p in files_under(str(tmp_path)))
    assert left == ["etc/health.d/netdrops-openmetrics.conf", "lib/install-manifest.json"]
    assert run("uninstall", *args[:-2]).returncode == 0
    assert files_under(str(tmp_path)) == set()


def test_compose_fragment_gives_what_the_docker_install_relies_on():
    import yaml
    with open(os.path.join(REPO, "conf.d", "docker", "docker-compose.netdrops.yml")) as f:
        service = yaml.safe_load(f)["services"]["netdata"]
    assert service["network_mode"] == "host"  # the host's interfaces and /proc/net
    volumes = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert volumes["/etc/netdata"] == "netdataconfig"  # where --docker installs
    assert volumes["/host/proc"] == "/proc" and volumes["/host/sys"] == "/sys"
