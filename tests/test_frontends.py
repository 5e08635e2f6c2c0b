"""Both front-ends, run the way Netdata runs them: python.d.plugin in debug mode and the
installed netdrops.plugin launcher, each checked against the plugins.d protocol."""

import os
import signal
import subprocess
import time

import pytest

from netdrops_collector import charts
from protocol_check import parse

PYTHOND_PLUGIN = "/usr/lib/netdata/plugins.d/python.d.plugin"
HOST_CONTEXTS = {c.context for c in charts.host_charts()}


def install(tmp_path, mode):
    dirs = {k: str(tmp_path / k) for k in ("plugins", "pythond", "config", "lib")}
    subprocess.run(["netdrops-collector", "install", "--mode", mode,
                    "--plugins-dir", dirs["plugins"], "--pythond-dir", dirs["pythond"],
                    "--config-dir", dirs["config"], "--lib-dir", dirs["lib"]],
                   check=True, capture_output=True, text=True)
    return dirs


def run_for(argv, seconds, env=None):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    return proc.returncode, out, err


def assert_every_dimension_collected(stream):
    """Each declared dimension gets a value in the last update of its chart (the check that
    catches chart definitions and collection drifting apart)."""
    assert stream.sets, "no BEGIN/SET/END at all"
    for cid, chart in stream.charts.items():
        if "obsolete" in chart["options"] or cid.startswith("netdata."):
            continue
        assert cid in stream.sets, "{0} was never updated".format(cid)
        last = stream.sets[cid][-1]
        missing = [d for d in chart["dims"] if d not in last]
        assert not missing, "{0}: no value for {1}".format(cid, missing)


@pytest.mark.skipif(not os.path.exists(PYTHOND_PLUGIN), reason="needs Debian's netdata-plugins-python")
def test_pythond_module_under_netdatas_own_pythond_plugin(tmp_path):
    dirs = install(tmp_path, "python.d")
    os.makedirs(tmp_path / "lock")
    env = dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"], NETDATA_LOCK_DIR=str(tmp_path / "lock"),
               NETDATA_USER_PLUGINS_DIRS=str(tmp_path))
    # python.d looks for modules in <user plugins dir>/python.d: the install wrote it to "pythond".
    os.symlink(dirs["pythond"], str(tmp_path / "python.d"))
    rc, out, err = run_for([PYTHOND_PLUGIN, "1", "debug", "trace", "netdrops"], 4, env)
    assert "check success" in err, err[-2000:]
    stream = parse(out, strict=False)
    contexts = {c["context"] for c in stream.charts.values()}
    assert HOST_CONTEXTS <= contexts
    assert "netdrops_local.softnet_dropped" in stream.charts
    assert_every_dimension_collected(stream)
    assert len(stream.sets["netdrops_local.softnet_dropped"]) >= 2


def test_external_plugin_speaks_the_protocol(tmp_path):
    dirs = install(tmp_path, "plugin")
    plugin = os.path.join(dirs["plugins"], "netdrops.plugin")
    env = dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"])
    rc, out, err = run_for([plugin, "1"], 3.5, env)
    assert rc == 0, err
    stream = parse(out)
    assert not stream.disabled
    assert HOST_CONTEXTS <= {c["context"] for c in stream.charts.values()}
    assert_every_dimension_collected(stream)
    assert len(stream.sets["netdrops_local.softnet_processed"]) >= 3
    physical = [c for c in stream.charts.values() if c["context"] == "netdrops.iface_drops"
                and c["labels"].get("kind") == "physical"]
    assert physical, "no physical NIC chart on a host that has one"
    assert physical[0]["family"].startswith("physical/")


def test_both_front_ends_publish_the_same_charts(tmp_path):
    plugin_dirs = install(tmp_path / "p", "plugin")
    pyd_dirs = install(tmp_path / "y", "python.d")
    os.makedirs(tmp_path / "lock")
    os.symlink(pyd_dirs["pythond"], str(tmp_path / "y" / "python.d"))
    _, out_plugin, _ = run_for([os.path.join(plugin_dirs["plugins"], "netdrops.plugin"), "1"], 2.5,
                               dict(os.environ, NETDATA_USER_CONFIG_DIR=plugin_dirs["config"]))
    _, out_pyd, _ = run_for([PYTHOND_PLUGIN, "1", "debug", "trace", "netdrops"], 3.5,
                            dict(os.environ, NETDATA_USER_CONFIG_DIR=pyd_dirs["config"],
                                 NETDATA_LOCK_DIR=str(tmp_path / "lock"), NETDATA_USER_PLUGINS_DIRS=str(tmp_path / "y")))
    a, b = parse(out_plugin), parse(out_pyd, strict=False)

    def shape(stream):
        return {cid: (c["context"], c["units"], c["family"], tuple(c["dims"]), tuple(sorted(c["labels"].items())))
                for cid, c in stream.charts.items() if not cid.startswith("netdata.")}
    plugin_shape = shape(a)
    pyd_shape = {cid: (ctx, u, f, dims, tuple(l for l in labels if l[0] != "_collect_job"))
                 for cid, (ctx, u, f, dims, labels) in shape(b).items()}
    # Other tests' veths may drop between the two runs and get charts in one run only; every
    # chart the host always has must be in both, and shared charts must be identical.
    always = {"netdrops_local." + c.id for c in charts.host_charts()} | \
             {cid for cid, v in plugin_shape.items() if v[2].startswith("physical/")}
    assert always <= set(plugin_shape) & set(pyd_shape)
    for cid in set(plugin_shape) & set(pyd_shape):
        assert plugin_shape[cid] == pyd_shape[cid], cid


def test_plugin_exits_cleanly_when_netdata_closes_its_stdout(tmp_path):
    dirs = install(tmp_path, "plugin")
    proc = subprocess.Popen([os.path.join(dirs["plugins"], "netdrops.plugin"), "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"]))
    assert proc.stdout.readline().startswith(b"CHART ")
    proc.stdout.close()
    start = time.monotonic()
    rc = proc.wait(timeout=5)
    err = proc.stderr.read().decode()
    assert rc == 0, err
    assert "Traceback" not in err
    assert time.monotonic() - start < 3


def test_plugin_exits_cleanly_on_sigterm(tmp_path):
    dirs = install(tmp_path, "plugin")
    proc = subprocess.Popen([os.path.join(dirs["plugins"], "netdrops.plugin"), "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"]))
    proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_plugin_with_a_broken_config_disables_itself_with_one_line(tmp_path):
    dirs = install(tmp_path, "plugin")
    with open(os.path.join(dirs["config"], "netdrops.conf"), "w") as f:
        f.write("update_every: 1\njobs:\n  - name: local\n    chart_kinds: [ethernet]\n")
    rc, out, err = run_for([os.path.join(dirs["plugins"], "netdrops.plugin"), "1"], 5,
                           dict(os.environ, NETDATA_USER_CONFIG_DIR=dirs["config"]))
    assert rc == 1
    assert out.strip() == "DISABLE"
    assert "chart_kinds: unknown kind ethernet" in err
    assert "Traceback" not in err
