"""netdrops-collector install/uninstall into a Netdata tree the test lays out."""

import grp
import io
import json
import os
import select
import subprocess
import sys
import tarfile
import time


def layout(tmp_path):
    """A Debian-like Netdata tree: plugins.d with python.d.plugin, python.d with the framework."""
    root = tmp_path / "root"
    (root / "usr/lib/netdata/plugins.d").mkdir(parents=True)
    (root / "usr/lib/netdata/plugins.d/python.d.plugin").write_text("#!/bin/sh\n")
    (root / "usr/lib/netdata/python.d/python_modules/bases").mkdir(parents=True)
    (root / "etc/netdata").mkdir(parents=True)
    return root


def run(*args):
    return subprocess.run(["netdrops-collector"] + list(args), capture_output=True, text=True)


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)


def test_install_picks_pythond_and_uninstall_removes_exactly_it(tmp_path):
    root = layout(tmp_path)
    before = tree(root)
    dirs_before = sorted(d for d, _s, _f in os.walk(root))
    r = run("install", "--netdata", str(root))
    assert r.returncode == 0, r.stderr
    after = tree(root)
    assert "usr/lib/netdata/python.d/netdrops.chart.py" in after
    assert "etc/netdata/python.d/netdrops.conf" in after
    assert "etc/netdata/health.d/netdrops.conf" in after
    assert "usr/lib/netdata/netdrops/netdrops_collector/core.py" in after
    assert not any(p.endswith("netdrops.plugin") for p in after)
    module = (root / "usr/lib/netdata/python.d/netdrops.chart.py").read_text()
    assert repr(str(root / "usr/lib/netdata/netdrops")) in module.splitlines()[0]

    again = run("install", "--netdata", str(root))
    assert again.returncode == 0 and "nothing to change" in again.stderr

    r = run("uninstall", "--netdata", str(root))
    assert r.returncode == 0, r.stderr
    assert tree(root) == before
    assert sorted(d for d, _s, _f in os.walk(root)) == dirs_before


def test_install_without_pythond_writes_the_plugin(tmp_path):
    root = layout(tmp_path)
    os.unlink(root / "usr/lib/netdata/plugins.d/python.d.plugin")
    assert run("install", "--netdata", str(root)).returncode == 0
    plugin = root / "usr/lib/netdata/plugins.d/netdrops.plugin"
    assert os.access(plugin, os.X_OK)
    assert plugin.read_text().startswith("#!/usr/bin/python3\n")
    assert (root / "etc/netdata/netdrops.conf").exists()


def test_users_own_config_is_kept_and_survives_uninstall(tmp_path):
    root = layout(tmp_path)
    mine = root / "etc/netdata/python.d/netdrops.conf"
    mine.parent.mkdir(parents=True)
    mine.write_text("local:\n  chart_interfaces: ['veth101i*']\n")
    assert run("install", "--netdata", str(root)).returncode == 0
    assert "veth101i" in mine.read_text()
    manifest = json.loads((root / "usr/lib/netdata/netdrops/install-manifest.json").read_text())
    assert str(mine) not in manifest["files"]
    assert run("uninstall", "--netdata", str(root)).returncode == 0
    assert "veth101i" in mine.read_text()


def test_mode_switch_removes_the_other_front_end(tmp_path):
    root = layout(tmp_path)
    assert run("install", "--netdata", str(root), "--mode", "plugin").returncode == 0
    assert run("install", "--netdata", str(root), "--mode", "python.d").returncode == 0
    assert not (root / "usr/lib/netdata/plugins.d/netdrops.plugin").exists()
    assert (root / "usr/lib/netdata/python.d/netdrops.chart.py").exists()


def test_pythond_disabled_by_users_config_is_reported(tmp_path):
    root = layout(tmp_path)
    (root / "etc/netdata/python.d.conf").write_text("default_run: no\nexample: yes\n")
    r = run("install", "--netdata", str(root))
    assert r.returncode == 0
    assert "netdrops: yes" in r.stderr


def test_dry_run_changes_nothing(tmp_path):
    root = layout(tmp_path)
    before = tree(root)
    r = run("install", "--netdata", str(root), "--dry-run")
    assert r.returncode == 0 and "would write" in r.stderr
    assert tree(root) == before


def test_no_netdata_is_one_clear_sentence(tmp_path):
    r = run("install", "--netdata", str(tmp_path / "nothing"))
    assert r.returncode == 2
    assert r.stderr.startswith("netdrops-collector: no Netdata installation found")
    assert "Traceback" not in r.stderr


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_alarms_file_follows_the_netdata_version(tmp_path):
    root = layout(tmp_path)
    health = root / "etc/netdata/health.d/netdrops.conf"
    assert run("install", "--netdata", str(root), "--netdata-version", "1.37").returncode == 0
    assert health.read_bytes() == open(os.path.join(REPO, "health.d/netdrops.conf"), "rb").read()
    assert run("uninstall", "--netdata", str(root)).returncode == 0
    assert run("install", "--netdata", str(root), "--netdata-version", "2.2").returncode == 0
    assert health.read_bytes() == open(os.path.join(REPO, "health.d/v2/netdrops.conf"), "rb").read()
    assert "chart labels:" in health.read_text()  # 1.38+ filters interfaces by label


def test_detected_version_of_this_machines_netdata():
    from netdrops_collector import install
    out = subprocess.run(["/usr/sbin/netdata", "-v"], capture_output=True, text=True)
    assert install.netdata_version(install.detect()) == install.parse_netdata_version(out.stdout + out.stderr)


def test_users_edits_to_installed_files_survive_reinstall_and_uninstall(tmp_path):
    root = layout(tmp_path)
    assert run("install", "--netdata", str(root)).returncode == 0
    health = root / "etc/netdata/health.d/netdrops.conf"
    health.write_text(health.read_text().replace("to: sysadmin", "to: silent"))
    r = run("install", "--netdata", str(root))
    assert r.returncode == 0 and "edited since netdrops installed it" in r.stderr
    assert "to: silent" in health.read_text()
    r = run("uninstall", "--netdata", str(root))
    assert r.returncode == 0
    assert "to: silent" in health.read_text()  # the user's file stays
    assert not (root / "usr/lib/netdata/python.d/netdrops.chart.py").exists()


def test_bad_netdata_version_is_one_sentence(tmp_path):
    r = run("install", "--netdata", str(layout(tmp_path)), "--netdata-version", "latest")
    assert r.returncode == 2 and "--netdata-version takes a version" in r.stderr


def test_unedited_137_alarms_of_ours_are_replaced_on_v2_without_moving(tmp_path):
    root = layout(tmp_path)
    assert run("install", "--netdata", str(root), "--netdata-version", "1.37").returncode == 0
    r = run("install", "--netdata", str(root), "--netdata-version", "2.11")
    assert r.returncode == 0 and "moved your" not in r.stderr
    health = root / "etc/netdata/health.d"
    assert sorted(os.listdir(health)) == ["netdrops.conf"]
    assert (health / "netdrops.conf").read_bytes() == open(os.path.join(REPO, "health.d/v2/netdrops.conf"), "rb").read()


def test_a_137_alarm_file_not_ours_is_moved_aside_never_over_an_earlier_one(tmp_path):
    root = layout(tmp_path)
    health = root / "etc/netdata/health.d"
    health.mkdir()
    earlier = b"# moved aside by an earlier upgrade\n"
    (health / "netdrops.conf.1.37-edited").write_bytes(earlier)
    mine = open(os.path.join(REPO, "health.d/netdrops.conf"), "rb").read() + b"# copied by hand\n"
    (health / "netdrops.conf").write_bytes(mine)
    r = run("install", "--netdata", str(root), "--netdata-version", "2.11", "--dry-run")
    assert "would move {0} to {0}.1.37-edited.2".format(health / "netdrops.conf") in r.stderr
    assert (health / "netdrops.conf").read_bytes() == mine
    r = run("install", "--netdata", str(root), "--netdata-version", "2.11")
    assert r.returncode == 0 and "moved your Netdata 1.37 alarm file" in r.stderr
    assert (health / "netdrops.conf.1.37-edited").read_bytes() == earlier
    assert (health / "netdrops.conf.1.37-edited.2").read_bytes() == mine
    assert b"chart labels:" in (health / "netdrops.conf").read_bytes()
    assert run("uninstall", "--netdata", str(root)).returncode == 0
    assert sorted(os.listdir(health)) == ["netdrops.conf.1.37-edited", "netdrops.conf.1.37-edited.2"]


def test_a_users_v2_alarm_file_is_kept_on_v2(tmp_path):
    root = layout(tmp_path)
    health = root / "etc/netdata/health.d"
    health.mkdir()
    mine = open(os.path.join(REPO, "health.d/v2/netdrops.conf"), "rb").read().replace(b"to: sysadmin", b"to: silent")
    (health / "netdrops.conf").write_bytes(mine)
    r = run("install", "--netdata", str(root), "--netdata-version", "2.11")
    assert r.returncode == 0 and "moved your" not in r.stderr and "keeping" in r.stderr
    assert (health / "netdrops.conf").read_bytes() == mine


def test_auto_mode_is_the_plugin_on_v2_and_python_d_on_137(tmp_path):
    root = layout(tmp_path)
    r = run("install", "--netdata", str(root), "--netdata-version", "2.11", "--dry-run")
    assert "netdrops.plugin" in r.stderr and "netdrops.chart.py" not in r.stderr
    r = run("install", "--netdata", str(root), "--netdata-version", "1.37", "--dry-run")
    assert "netdrops.chart.py" in r.stderr and "netdrops.plugin" not in r.stderr


# The last commit before the plugin's Functions had providers: its launcher calls main() alone
# and its collector imported the advisor itself.
BEFORE_FUNCTION_PROVIDERS = "0fe8562dac5dbdf519b7a5fcfba9bff2bce635d9"


def checkout_of(commit, dest):
    """The collector and advisor of `commit` as importable packages, from git."""
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit, "collector", "advisor",
                              "health.d", "conf.d"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(str(dest))
    os.rename(str(dest / "collector"), str(dest / "netdrops_collector"))
    os.rename(str(dest / "advisor"), str(dest / "netdrops_advisor"))
    return str(dest)


def first_lines_of_plugin(launcher, config_dir, until, timeout=20):
    """What the installed launcher writes (with Netdata's pipe on stdin) up to `until`."""
    env = dict(os.environ, NETDATA_USER_CONFIG_DIR=config_dir, NETDATA_PLUGINS_DIR=os.path.dirname(launcher))
    proc = subprocess.Popen([launcher, "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, deadline = b"", time.monotonic() + timeout
    try:
        while until.encode() not in out and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        proc.stdin.close()  # Netdata is done with it: it exits 0
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
    assert until.encode() in out, (out[-500:], err)
    assert "Traceback" not in err and "ERROR" not in err, err
    return out.decode()


def test_an_upgrade_over_a_plugin_install_of_before_providers_rewrites_the_launcher(tmp_path):
    dirs = {k: str(tmp_path / k) for k in ("plugins", "pythond", "config", "lib")}
    args = ["install", "--mode", "plugin", "--no-health"] + [
        a for k in ("plugins", "pythond", "config", "lib") for a in ("--{0}-dir".format(k), dirs[k])]
    env = dict(os.environ, PYTHONPATH=checkout_of(BEFORE_FUNCTION_PROVIDERS, tmp_path / "old"))
    old = subprocess.run([sys.executable, "-c", "import sys; from netdrops_collector.cli import main; sys.exit(main())"]
                         + args, capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert old.returncode == 0, old.stderr
    launcher = os.path.join(dirs["plugins"], "netdrops.plugin")
    with open(launcher) as f:
        assert f.read().endswith("sys.exit(main())\n")  # the old launcher
    assert not os.path.exists(os.path.join(dirs["lib"], "netdrops_advisor", "function.py"))

    new = run(*args)
    assert new.returncode == 0, new.stderr
    assert "writing {0}".format(launcher) in new.stderr
    with open(launcher) as f:
        assert "main(providers=['netdrops_advisor.function:provide'])" in f.read()
    assert os.path.exists(os.path.join(dirs["lib"], "netdrops_advisor", "function.py"))
    text = first_lines_of_plugin(launcher, dirs["config"], 'FUNCTION GLOBAL "netdrops-advisor"')
    assert "BEGIN " in text  # registered after the first charts, as before


# The last commit whose packages were flat (every module beside __init__.py), before the
# collector's kernel/ and frontends/ and the advisor's sources/, diagnose/ and apply/.
LAST_FLAT_LAYOUT = "172c02d838d6a8a8d07c8323b37c63d648694934"


def test_an_upgrade_over_a_flat_layout_install_removes_its_modules_and_uninstall_leaves_nothing(tmp_path, monkeypatch):
    root = layout(tmp_path)
    os.unlink(root / "usr/lib/netdata/plugins.d/python.d.plugin")  # the plugin, with the advisor's Function
    before, dirs_before = tree(root), sorted(d for d, _s, _f in os.walk(root))
    lib = root / "usr/lib/netdata/netdrops"
    env = dict(os.environ, PYTHONPATH=checkout_of(LAST_FLAT_LAYOUT, tmp_path / "old"))
    old = subprocess.run([sys.executable, "-c", "import sys; from netdrops_collector.cli import main; sys.exit(main())",
                          "install", "--netdata", str(root), "--no-health"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert old.returncode == 0, old.stderr
    flat = ["netdrops_collector/softnet.py", "netdrops_collector/plugin.py", "netdrops_advisor/diagnosis.py",
            "netdrops_advisor/apply.py"]
    assert all((lib / name).exists() for name in flat)

    new = run("install", "--netdata", str(root), "--no-health")
    assert new.returncode == 0, new.stderr
    assert [name for name in flat if (lib / name).exists()] == []
    nested = ["netdrops_collector/kernel/softnet.py", "netdrops_collector/frontends/plugin.py",
              "netdrops_advisor/diagnose/diagnosis.py", "netdrops_advisor/apply/plan.py"]
    assert [name for name in nested if not (lib / name).exists()] == []
    # Netdata's interpreter runs the installed plugin from LIB, writing __pycache__ in every sub-package.
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    launcher = str(root / "usr/lib/netdata/plugins.d/netdrops.plugin")
    text = first_lines_of_plugin(launcher, str(root / "etc/netdata"), 'FUNCTION GLOBAL "netdrops-advisor"')
    assert "BEGIN " in text
    assert (lib / "netdrops_collector/kernel/__pycache__").is_dir()

    r = run("uninstall", "--netdata", str(root))
    assert r.returncode == 0, r.stderr
    assert tree(root) == before
    assert sorted(d for d, _s, _f in os.walk(root)) == dirs_before


SYSTEM_UNITS = "/etc/systemd/system"
HELPER_UNITS = ("netdrops-reasons.socket", "netdrops-reasons@.service")
HELPER_SOCKET = "/run/netdrops/reasons.sock"


def tracefs_mounts():
    from netdrops_collector.kernel import tracefs
    with open("/proc/self/mounts") as f:
        return tracefs.parse_tracefs_mounts(f.read())


def test_install_for_this_host_sets_up_the_helper_and_uninstall_undoes_exactly_that(tmp_path, requires_root):
    """Units in this host's /etc/systemd/system (systemd is not PID 1 here: install says what to
    run instead), the socket a --listen helper made, and tracefs: left mounted when it was,
    mounted and unmounted again when it was not."""
    from netdrops_collector.kernel import tracefs
    assert not any(os.path.exists(os.path.join(SYSTEM_UNITS, u)) for u in HELPER_UNITS), "units already installed"
    assert not os.path.exists(HELPER_SOCKET), "a reasons helper already runs here"
    dirs = [a for k in ("plugins", "pythond", "config", "lib") for a in ("--{0}-dir".format(k), str(tmp_path / k))]
    args = dirs + ["--units-dir", SYSTEM_UNITS, "--mode", "plugin", "--netdata-version", "1.37"]
    manifest_path = tmp_path / "lib" / "install-manifest.json"
    was_mounted = tracefs.find_root() is not None
    try:
        for mounted_before in (True, False):
            if mounted_before and tracefs.find_root() is None:
                subprocess.run(["mount", "-t", "tracefs", "nodev", tracefs.DEFAULT_MOUNT], check=True)
            if not mounted_before and tracefs.find_root() is not None:
                subprocess.run(["umount", tracefs.DEFAULT_MOUNT], check=True)
            dry = run("install", "--dry-run", *args)
            assert dry.returncode == 0, dry.stderr
            assert ("would mount tracefs" in dry.stderr) != mounted_before
            r = run("install", *args)
            assert r.returncode == 0, r.stderr
            assert "systemd is not running here: start the drop-reasons helper as root from your init system: " \
                "netdrops-collector reasons-helper --listen /run/netdrops/reasons.sock" in r.stderr
            manifest = json.loads(manifest_path.read_text())
            for u in HELPER_UNITS:
                assert os.path.join(SYSTEM_UNITS, u) in manifest["files"]
            assert manifest["helper"].get("mounted", []) == ([] if mounted_before else [tracefs.DEFAULT_MOUNT])
            assert "enabled" not in manifest["helper"]  # no systemd to enable them with
            assert tracefs.find_root() is not None
            # What the sentence says to run, killed without its cleanup: its socket is left.
            helper = subprocess.Popen(["netdrops-collector", "reasons-helper", "--listen", HELPER_SOCKET],
                                      stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 10
            while not os.path.exists(HELPER_SOCKET) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert oct(os.stat(HELPER_SOCKET).st_mode & 0o777) == "0o660"
            helper.kill()
            helper.wait(timeout=10)
            helper.stderr.close()
            assert os.path.exists(HELPER_SOCKET)

            r = run("uninstall", *dirs, "--units-dir", SYSTEM_UNITS)
            assert r.returncode == 0, r.stderr
            assert not any(os.path.exists(os.path.join(SYSTEM_UNITS, u)) for u in HELPER_UNITS)
            assert not os.path.exists(HELPER_SOCKET) and not os.path.exists(os.path.dirname(HELPER_SOCKET))
            assert not manifest_path.exists()
            assert (tracefs.find_root() is not None) == mounted_before
            assert tree(tmp_path) == []
    finally:
        if was_mounted and tracefs.find_root() is None:
            subprocess.run(["mount", "-t", "tracefs", "nodev", tracefs.DEFAULT_MOUNT], check=False)
        if not was_mounted and tracefs.find_root() is not None:
            subprocess.run(["umount", tracefs.DEFAULT_MOUNT], check=False)
        for u in HELPER_UNITS:
            if os.path.exists(os.path.join(SYSTEM_UNITS, u)):
                os.unlink(os.path.join(SYSTEM_UNITS, u))


def test_a_listen_helper_removes_its_socket_when_stopped(tmp_path, requires_root):
    sock = str(tmp_path / "run" / "reasons.sock")
    helper = subprocess.Popen(["netdrops-collector", "reasons-helper", "--listen", sock], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    st = os.stat(sock)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, grp.getgrnam("netdata").gr_gid, 0o660)
    helper.terminate()
    assert helper.wait(timeout=10) == 0
    assert "listening on {0}".format(sock) in helper.stderr.read()
    helper.stderr.close()
    assert not os.path.exists(sock)


def test_openmetrics_and_docker_installs_say_where_the_helper_is(tmp_path):
    root = layout(tmp_path)
    assert run("install", "--netdata", str(root), "--mode", "plugin").returncode == 0
    assert sorted(os.listdir(root / "etc/systemd/system")) == sorted(HELPER_UNITS)
    r = run("install", "--netdata", str(root), "--mode", "openmetrics", "--netdata-version", "2.11")
    assert r.returncode == 0, r.stderr
    assert "run as root counts drop reasons itself; no helper installed" in r.stderr
    assert os.listdir(root / "etc/systemd/system") == []  # the switch took the units (uninstall, the folders)
    config = tmp_path / "volume"
    config.mkdir()
    r = run("install", "--docker", "--config-dir", str(config))
    assert r.returncode == 0, r.stderr
    assert "in Docker the drop-reasons helper must run on the host" in r.stderr
    assert not [p for p in tree(config) if "netdrops-reasons" in p]
