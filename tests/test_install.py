"""netdrops-collector install/uninstall into a Netdata tree the test lays out."""

import json
import os
import subprocess


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
