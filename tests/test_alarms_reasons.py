"""The drop-reason alarms (netdrops_reason_cpu_backlog, netdrops_reason_socket_rcvbuff) in the
real Netdata 1.37 and v2.11, on the netdrops.drop_reasons chart of the real plugin, driven by
real kernel drops from the lab.

The plugin runs as root here (Netdata's `run as user = root`), so the collector opens the reason
counters itself; the path through the root helper, for a plugin running as `netdata`, is the
helper's own tests' business. tracefs is mounted for the test if it is not (and unmounted after).

One Netdata per agent, one lab (which holds the lab lock throughout, so no other lab changes the
backlog meanwhile), three phases:
  A quiet: default backlog, no traffic: both alarms load on the reasons chart and, once the
    one-minute lookup is evaluated, stay CLEAR. `socket_rcvbuff` (and usually `cpu_backlog`) has
    no dimension yet: a reason's dimension appears when it first counts, and the alarm on it
    reads null, which is CLEAR, quietly (no log line, nothing in the alarm log as raised);
  B UDP_OVERRUN (backlog 1000, a full socket nobody reads): the socket_rcvbuff dimension appears
    and its alarm is raised, while the CPU_BACKLOG alarm stays CLEAR throughout: the precise
    alarm does not mistake receive-buffer drops for backlog drops;
  C SEED (backlog 2): the CPU_BACKLOG alarm goes WARNING on the real backlog drops.
Timings are printed (pytest -s) and kept as user properties.
"""

import os
import time

import pytest

from lab import SEED, UDP_OVERRUN
from test_alarms import (HEALTH_FILE, HEALTH_FILE_V2, RAISED, Watch, by_name, health_errors, install_with_alarms,
                         parse_health, raised_in_log)
from test_alarms_v2 import assert_v2_took_every_key, log_problems

CHART = "netdrops_local.drop_reasons"
CPU_BACKLOG = CHART + ".netdrops_reason_cpu_backlog"
SOCKET_RCVBUFF = CHART + ".netdrops_reason_socket_rcvbuff"
REASON_ALARMS = {"netdrops_reason_cpu_backlog", "netdrops_reason_socket_rcvbuff"}
AS_ROOT = {"global": {"run as user": "root"}}  # the plugin opens the counters itself

V137 = by_name(parse_health(HEALTH_FILE))
V2 = by_name(parse_health(HEALTH_FILE_V2))


# -- the files themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("alarms", [V137, V2], ids=["1.37", "v2"])
def test_reason_alarms_look_up_one_reason_each_with_the_interface_thresholds(alarms):
    rate = alarms["netdrops_host_inbound_drops"]
    for name, dim in (("netdrops_reason_cpu_backlog", "cpu_backlog"), ("netdrops_reason_socket_rcvbuff",
                                                                       "socket_rcvbuff")):
        e = alarms[name]
        assert e["on"] == "netdrops.drop_reasons" and e["lookup"] == "sum -1m unaligned absolute of " + dim
        for key in ("calc", "units", "every", "warn", "crit", "delay", "to"):
            assert e[key] == rate[key], "{0}: {1}".format(name, key)
        assert "chart labels" not in e and "families" not in e, name + ": one host chart"
    assert "the only drops that raising net.core.netdev_max_backlog fixes" in \
        alarms["netdrops_reason_cpu_backlog"]["info"]
    socket_info = alarms["netdrops_reason_socket_rcvbuff"]["info"]
    assert "not reading fast enough" in socket_info and "net.core.rmem_max" in socket_info
    assert "larger net.core.netdev_max_backlog does not help" in socket_info
    for name, e in alarms.items():
        if e["on"] in ("netdrops.iface_drops", "netdrops.iface_packets") and "warn" in e:
            assert "(netdrops.drop_reasons) says why" in e["info"], name


# -- Netdata ----------------------------------------------------------------------------------

def start_netdata(agent, request):
    if agent == "1.37":
        nd = request.getfixturevalue("netdata_factory")("alarms-reasons", netdata_conf=AS_ROOT)
        install_with_alarms(nd)
    else:
        nd = request.getfixturevalue("netdata_v2_factory")("alarms-reasons-v2", netdata_conf=AS_ROOT)
        nd.install_netdrops("plugin")
        with open(os.path.join(nd.health_dir, "netdrops.conf")) as installed, open(HEALTH_FILE_V2) as shipped:
            assert installed.read() == shipped.read()
    nd.start()
    return nd


def problems(nd, agent):
    """Health errors (1.37), or v2's lines about netdrops and the health configuration."""
    if agent == "1.37":
        return health_errors(nd)
    return log_problems(nd)


def keep_polling(watch, seconds):
    """Watch every status change for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watch.poll()
        time.sleep(1)


def dims(nd):
    return sorted(d["name"] for d in nd.charts()[CHART]["dimensions"].values())


@pytest.mark.parametrize("agent", ["1.37", "v2.11"])
def test_reason_alarms_quiet_then_socket_buffer_then_backlog(agent, request, tracefs_mounted, drop_lab, record_property):
    lab = drop_lab
    # -- A: quiet ------------------------------------------------------------------------------
    before = lab.kernel_counters()
    nd = start_netdata(agent, request)
    watch = Watch(nd, record_property)
    chart = nd.wait_chart(CHART, timeout=30)
    watch.mark("reasons chart", dimensions=dims(nd))
    assert chart["context"] == "netdrops.drop_reasons" and "other" in dims(nd)
    linked = watch.until(lambda alarms: {a["name"] for a in alarms.values() if a["chart"] == CHART} == REASON_ALARMS
                         and alarms, 30, "both reason alarms on the reasons chart")
    if agent == "v2.11":
        listed = nd.charts()
        for key in (CPU_BACKLOG, SOCKET_RCVBUFF):
            assert_v2_took_every_key(V2[linked[key]["name"]], linked[key], listed[CHART])
    else:
        for key in (CPU_BACKLOG, SOCKET_RCVBUFF):
            assert linked[key]["info"] == V137[linked[key]["name"]]["info"]
    # Both evaluated (the first one-minute lookup waits for a minute of data): CLEAR.
    watch.until(lambda alarms: all(alarms[k]["status"] == "CLEAR" for k in (CPU_BACKLOG, SOCKET_RCVBUFF)),
                100, "both reason alarms CLEAR")
    quiet = lab.kernel_counters().minus(before)
    evaluated = watch.poll()
    t_quiet = watch.mark("quiet evaluated", dimensions=dims(nd),
                         values={k.rsplit(".", 1)[1]: evaluated[k]["value"] for k in (CPU_BACKLOG, SOCKET_RCVBUFF)},
                         softnet_drops=sum(quiet.softnet_dropped.values()), rcvbuf_errors=quiet.udp_rcvbuf_errors)
    assert sum(quiet.softnet_dropped.values()) == 0 and quiet.udp_rcvbuf_errors == 0, "the host was not quiet"
    assert "socket_rcvbuff" not in dims(nd)
    assert evaluated[SOCKET_RCVBUFF]["value"] is None, "no dimension yet: the lookup reads null"
    assert not [e for e in raised_in_log(nd, REASON_ALARMS)]
    assert problems(nd, agent) == []

    # -- B: receive-buffer drops, default backlog -----------------------------------------------
    before = lab.kernel_counters()
    lab.run_traffic(UDP_OVERRUN)
    t_overrun = watch.mark("UDP_OVERRUN traffic")
    nd.wait_for(lambda: "socket_rcvbuff" in dims(nd), 15, interval=1, what="the socket_rcvbuff dimension")
    watch.mark("socket_rcvbuff dimension appeared")
    watch.status(SOCKET_RCVBUFF, RAISED, 60)
    keep_polling(watch, 20)  # two more evaluations of the CPU_BACKLOG alarm over these drops
    overrun = lab.kernel_counters().minus(before)
    raised = watch.poll()
    watch.mark("socket alarm raised", after_s=watch.raised_since(SOCKET_RCVBUFF, t_overrun),
               value=raised[SOCKET_RCVBUFF]["value"], status=raised[SOCKET_RCVBUFF]["status"],
               cpu_backlog=raised[CPU_BACKLOG]["status"], kernel_rcvbuf_errors_per_s=round(
                   overrun.udp_rcvbuf_errors / overrun.when, 2), softnet_drops=sum(overrun.softnet_dropped.values()))
    assert overrun.udp_rcvbuf_errors / overrun.when > 2.97
    assert sum(overrun.softnet_dropped.values()) == 0
    assert raised[SOCKET_RCVBUFF]["value"] > 0.5
    assert watch.changes[CPU_BACKLOG][-1][1] == "CLEAR" and not any(
        watch.ever(CPU_BACKLOG, status) for status in RAISED), "receive-buffer drops raised the backlog alarm"

    # -- C: backlog drops -------------------------------------------------------------------------
    lab.stop_traffic()
    before = lab.kernel_counters()
    lab.run_traffic(SEED)
    t_seed = watch.mark("seed traffic")
    watch.status(CPU_BACKLOG, RAISED, 90)
    seed = lab.kernel_counters().minus(before)
    warned = watch.poll()[CPU_BACKLOG]
    watch.mark("backlog alarm raised", after_s=watch.raised_since(CPU_BACKLOG, t_seed), value=warned["value"],
               status=warned["status"], kernel_veth_drops_per_s=round(seed.rx_dropped / seed.when, 2),
               kernel_softnet_drops_per_s=round(sum(seed.softnet_dropped.values()) / seed.when, 2))
    assert seed.rx_dropped > 0
    # The first raise comes from CLEAR: the thresholds without hysteresis decide.
    assert warned["status"] == ("CRITICAL" if warned["value"] >= 2.97 else "WARNING")
    assert warned["status"] == "WARNING", "the seed rate (below 2.97/s) reads above it: {0}".format(warned["value"])
    assert "cpu_backlog" in dims(nd)
    assert [e["name"] for e in raised_in_log(nd, {"netdrops_reason_cpu_backlog"})]
    assert problems(nd, agent) == []
    record_property("phases_s", {"quiet": t_quiet, "overrun": round(t_seed - t_overrun, 1),
                                 "seed": round(watch.now() - t_seed, 1)})
