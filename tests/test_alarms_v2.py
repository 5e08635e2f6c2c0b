"""The alarms on the real Netdata v2.11 (../shared/netdata-v2): health.d/v2/netdrops.conf as
`netdrops-collector install` ships it for v2, fed by the real plugin, and
health.d/v2/netdrops-openmetrics.conf on charts laid out the way go.d's prometheus module makes
them from the real `netdrops-collector openmetrics` exporter, both driven by real kernel drops
from the lab.

v2 evaluates a one-minute lookup once its chart holds a minute of data, and the notification
waits out `delay: up 90s`: the lab scenarios are as short as that allows (WARNING and the
notification; clearing is the 1.37 test's). Timings are printed (pytest -s) and kept as user
properties.
"""

import html
import os
import re
import shutil
import time

import pytest
import yaml

from lab import SEED
from netdatad import AGENT_V2
from netdrops_collector import charts
from netdrops_collector.frontends import openmetrics
from test_alarms import (CONTAINER_ROLES, HEALTH_FILE_V2, HOST_ROLES, QUIET_ROLES, RAISED, REPO, Watch,
                         by_name, ours, parse_health)
from test_openmetrics import Exporter

OPENMETRICS_HEALTH_FILE = os.path.join(REPO, "health.d", "v2", "netdrops-openmetrics.conf")
GO_D_JOB_FILE = os.path.join(REPO, "conf.d", "go.d", "prometheus-netdrops.conf")

V2 = by_name(parse_health(HEALTH_FILE_V2))
OPENMETRICS = by_name(parse_health(OPENMETRICS_HEALTH_FILE))

# The keys v2.11's health parser acts on (src/health/health_config.c, health_readfile(); the
# strings are in /opt/nd2's binary). It logs any other key, except `families` and `charts`,
# which it skips without a word: a file relying on those would quietly alarm on every chart.
V2_HEALTH_KEYS = {"alarm", "template", "on", "os", "hosts", "host labels", "plugin", "module", "chart labels",
                  "class", "component", "type", "lookup", "every", "green", "red", "calc", "warn", "crit",
                  "exec", "to", "units", "summary", "info", "delay", "options", "repeat"}
# Lookup words health_parse_db_lookup() knows after the method and the duration.
V2_LOOKUP_OPTIONS = {"at", "every", "absolute", "abs", "absolute_sum", "min2max", "average", "min", "max", "sum",
                     "null2zero", "percentage", "unaligned", "anomaly-bit", "match-ids", "match_ids",
                     "match-names", "match_names", "of"}

V2_LOGS = ("daemon.log", "health.log", "collector.log")


def go_d_job():
    with open(GO_D_JOB_FILE) as f:
        return yaml.safe_load(f)["jobs"][0]


# -- the files themselves ---------------------------------------------------------------------

def lookup_parts(lookup):
    """(method, after seconds, options, dimensions or None) of a `lookup:` line."""
    head, _, dims = lookup.partition(" of ")
    words = head.split()
    return words[0], -duration(words[1].lstrip("-")), set(words[2:]), (dims or None)


def duration(text):
    """Seconds of a health duration such as 90s, 15m, 1h."""
    number, unit = re.fullmatch(r"(\d+)([smh]?)", text).groups()
    return int(number) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]


def delay_parts(delay):
    words = delay.split()
    return dict(zip(words[::2], words[1::2]))


def label_filter(entity):
    """{label: allowed values} of a `chart labels:` line as v2.11 reads it
    (health_config_add_key_to_values(): `role=a b c` means role a, b or c; every label named
    must match)."""
    allowed, key = {}, None
    for word in entity.get("chart labels", "").split():
        if "=" in word:
            key, word = word.split("=", 1)
        allowed.setdefault(key, set()).add(word)
    return allowed


@pytest.mark.parametrize("path", [HEALTH_FILE_V2, OPENMETRICS_HEALTH_FILE], ids=os.path.basename)
def test_v2_files_use_only_what_v2_parses(path):
    for name, e in by_name(parse_health(path)).items():
        keys = set(e) - {"_kind", "_line", "_colons"}
        assert keys <= V2_HEALTH_KEYS, "{0}: v2 does not know {1}".format(name, keys - V2_HEALTH_KEYS)
        if "lookup" in e:
            _method, _after, options, dims = lookup_parts(e["lookup"])
            assert options <= V2_LOOKUP_OPTIONS and "foreach" not in (dims or ""), name
        for key, values in label_filter(e).items():
            assert key and values and None not in values, name
        assert len(set(e["_colons"].values())) == 1, name + ": keys not aligned"


def test_openmetrics_file_is_the_seed_alarms_on_go_d_prometheus_contexts():
    """The interface and backlog alarms of the v2 file, on the contexts go.d's prometheus module
    gives our exporter's metrics under the shipped job: same thresholds, hysteresis, delays and
    recipients; interfaces picked by the same roles, inbound only."""
    job = go_d_job()["name"]
    # go.d: charts.go getChartContext(): prometheus.<job>.<metric>; a counter's metric name is
    # its sample name (`_total` included) as the Prometheus text format announces it.
    iface = "prometheus.{0}.{1}".format(job, openmetrics._IFACE_DROPS.sample_name)
    cpu = "prometheus.{0}.{1}".format(job, openmetrics._SOFTNET_DROPPED.sample_name)
    seed_alarm = {"netdrops_openmetrics_host_inbound_drops": V2["netdrops_host_inbound_drops"],
                  "netdrops_openmetrics_container_inbound_drops": V2["netdrops_container_inbound_drops"],
                  "netdrops_openmetrics_backlog_exceeded": V2["netdrops_backlog_exceeded"]}
    assert set(OPENMETRICS) == set(seed_alarm)
    for name, e in OPENMETRICS.items():
        seed = seed_alarm[name]
        for key in ("class", "type", "component", "calc", "units", "every", "warn", "crit", "delay", "to"):
            assert e[key] == seed[key], "{0}: {1} differs from {2}".format(name, key, seed.get("template"))
        method, after, options, dims = lookup_parts(e["lookup"])
        assert (method, after, dims) == ("sum", -60, None)  # one dimension per chart: no `of`
        assert options == {"unaligned", "absolute"}
        assert "netdrops-advisor" in e["info"] and e["summary"]
    for name in ("netdrops_openmetrics_host_inbound_drops", "netdrops_openmetrics_container_inbound_drops"):
        roles = label_filter(OPENMETRICS[name])
        assert OPENMETRICS[name]["on"] == iface
        assert roles == {"direction": {"inbound"}, "role": label_filter(seed_alarm[name])["role"]}
        assert not roles["role"] & QUIET_ROLES
    assert label_filter(OPENMETRICS["netdrops_openmetrics_host_inbound_drops"])["role"] == HOST_ROLES
    assert label_filter(OPENMETRICS["netdrops_openmetrics_container_inbound_drops"])["role"] == CONTAINER_ROLES
    assert OPENMETRICS["netdrops_openmetrics_backlog_exceeded"]["on"] == cpu
    assert "${label:cpu}" in OPENMETRICS["netdrops_openmetrics_backlog_exceeded"]["info"]


# -- what v2 made of them -----------------------------------------------------------------------

def log_problems(nd, names=("netdrops",)):
    """Lines of v2's logs about netdrops (or the other names), the health configuration
    included; health.log's record of each alarm's status change is what alarms are for."""
    found = []
    tmp = os.path.dirname(nd.root)  # the test's own directory is named netdrops-nd-*
    for log in V2_LOGS:
        for line in nd.log_text(log).replace(tmp, "<tmp>").splitlines():
            about = any(n in line.lower() for n in names) or "Health configuration" in line
            # The plugin's INFO lines say what it counts (drop reasons: how many, or why not).
            if about and "alert_status=" not in line and "netdrops.plugin: INFO: " not in line:
                found.append("{0}: {1}".format(log, line))
    return found


def expected_names_on(chart, entities):
    """The alarm names a health file puts on one chart, by v2's rules: a template for its
    context, filtered by the chart's labels."""
    labels = chart.get("chart_labels", {})
    return {name for name, e in entities.items() if e["on"] == chart["context"]
            and all(labels.get(key) in allowed for key, allowed in label_filter(e).items())}


def alarms_by_chart(alarms):
    by_chart = {}
    for a in alarms.values():
        by_chart.setdefault(a["chart"], set()).add(a["name"])
    return by_chart


def expected_by_chart(listed, entities, context_prefix):
    expected = {}
    for cid, chart in listed.items():
        if chart.get("context", "").startswith(context_prefix):
            names = expected_names_on(chart, entities)
            if names:
                expected[cid] = names
    return expected


def label_text(text, labels):
    """A health text with ${label:NAME} replaced by the chart's label, as v2 does."""
    return re.sub(r"\$\{label:(\w+)\}", lambda m: labels.get(m.group(1), m.group(0)), text)


def assert_v2_took_every_key(entity, alarm, chart):
    """The alarm as v2 reports it in /api/v1/alarms has every key of the file: nothing skipped
    or changed on the way (the API escapes HTML)."""
    name = alarm["name"]
    method, after, options, dims = lookup_parts(entity["lookup"])
    assert alarm["lookup_method"] == method and alarm["lookup_after"] == after, name
    assert set(alarm["lookup_options"].split()) == options, name
    assert alarm.get("lookup_dimensions") == dims, name
    assert alarm["update_every"] == duration(entity["every"]), name
    for key in ("calc", "warn", "crit"):
        assert html.unescape(alarm.get(key) or "") == entity.get(key, ""), name + ": " + key
    delay = delay_parts(entity.get("delay", ""))
    assert alarm["delay_up_duration"] == duration(delay.get("up", "0")), name
    assert alarm["delay_down_duration"] == duration(delay.get("down", "0")), name
    if "max" in delay:
        assert alarm["delay_max_duration"] == duration(delay["max"]), name
    assert alarm["delay_multiplier"] == float(delay.get("multiplier", 1)), name
    labels = chart.get("chart_labels", {})
    for key, field in (("class", "class"), ("type", "type"), ("component", "component"), ("to", "recipient"),
                       ("units", "units"), ("summary", "summary"), ("info", "info")):
        assert alarm[field] == label_text(entity[key], labels), "{0}: {1}".format(name, key)
    assert "${label:" not in alarm["summary"] + alarm["info"], name


# An external plugin publishing netdrops charts the way the collector does, for the interface
# roles this kernel cannot make (bonds, vlans, wifi, tun...), each dropping 5 packets a second,
# and a softnet_dropped chart whose CPUs drop 1/s (cpu0) and 2/s (cpu1): the worst-CPU alarm
# must read 2/s (the `max` of the CPUs), not their sum.
ROLES = sorted(HOST_ROLES | CONTAINER_ROLES | QUIET_ROLES)
KIND_OF_ROLE = {"bond-slave": "physical", "wifi": "physical", "loopback": "other"}
ROLE_PLUGIN = r"""#!/usr/bin/python3
import sys, time
roles = %(roles)r
kinds = %(kinds)r
def chart(cid, title, ctx, role, dims):
    dev = "nd" + role.replace("-", "") + "0"
    print("CHART netdrops_roles.%%s '' '%%s' 'packets/s' '%%s/%%s' '%%s' line 1 1 '' 'ndroles.plugin' 'roles'"
          %% (cid, title, role, dev, ctx))
    for key, value in (("device", dev), ("kind", kinds.get(role, role)), ("role", role)):
        print("CLABEL '%%s' '%%s' 1" %% (key, value))
    print("CLABEL_COMMIT")
    for dim, mult in dims:
        print("DIMENSION '%%s' '%%s' incremental %%d 1" %% (dim, dim, mult))
for role in roles:
    r = role.replace("-", "_")
    chart("iface_%%s_drops" %% r, "drops", "netdrops.iface_drops", role, [("inbound", 1), ("outbound", -1)])
    chart("iface_%%s_packets" %% r, "packets", "netdrops.iface_packets", role, [("received", 1), ("dropped", 1)])
print("CHART netdrops_roles.softnet_dropped '' 'backlog drops' 'packets/s' 'softnet' 'netdrops.softnet_dropped' "
      "line 1 1 '' 'ndroles.plugin' 'roles'")
print("CLABEL 'source' 'test' 1\nCLABEL_COMMIT")
for dim in ("cpu0", "cpu1", "total"):
    print("DIMENSION '%%s' '%%s' incremental 1 1" %% (dim, dim))
n = 0
while True:
    n += 1
    for role in roles:
        r = role.replace("-", "_")
        print("BEGIN netdrops_roles.iface_%%s_drops\nSET 'inbound' = %%d\nSET 'outbound' = 0\nEND" %% (r, 5 * n))
        print("BEGIN netdrops_roles.iface_%%s_packets\nSET 'received' = %%d\nSET 'dropped' = %%d\nEND"
              %% (r, 1000 * n, 5 * n))
    print("BEGIN netdrops_roles.softnet_dropped\nSET 'cpu0' = %%d\nSET 'cpu1' = %%d\nSET 'total' = %%d\nEND"
          %% (n, 2 * n, 3 * n))
    sys.stdout.flush()
    time.sleep(1)
""" % {"roles": ROLES, "kinds": KIND_OF_ROLE}


def online_cpus():
    with open("/proc/net/softnet_stat") as f:
        rows = [line.split() for line in f if line.strip()]
    return sorted(int(r[12], 16) if len(r) >= 13 else i for i, r in enumerate(rows))


def test_v2_alarms_load_on_every_chart_they_should_and_evaluate(netdata_v2_factory, record_property):
    """`netdrops-collector install` for v2.11 (plugin mode) puts health.d/v2/netdrops.conf in;
    in the real v2.11 every alarm is on the charts it should be on (host alarms on host-side
    roles, container alarms on veth/tun, none on bond slaves, wifi and `lo`, charted here on
    purpose; the backlog alarm once per softnet chart), /api/v1/alarms shows every key of the
    file as written, the variables naming other alarms resolve to the alarm of the same node
    and chart, and after the first minute the alarms read what the charts say."""
    nd = netdata_v2_factory("alarms-v2-load")
    nd.write_config_file("netdrops.conf", "update_every: 1\njobs:\n  - name: local\n"
                                          "    chart_interfaces: [lo]\n    exclude_interfaces: []\n")
    nd.install_netdrops("plugin")
    with open(os.path.join(nd.health_dir, "netdrops.conf")) as installed, open(HEALTH_FILE_V2) as shipped:
        assert installed.read() == shipped.read(), "the v2 install did not ship health.d/v2/netdrops.conf"
    nd.add_plugin("ndroles", ROLE_PLUGIN)
    nd.start()
    t0 = time.monotonic()
    nd.wait_chart("netdrops_local.softnet_dropped")
    nd.wait_chart("netdrops_local.iface_lo_drops", timeout=30)
    nd.wait_chart("netdrops_roles.softnet_dropped", timeout=30)

    def linked():
        listed = nd.charts()
        expected = expected_by_chart(listed, V2, "netdrops.")
        return (listed, expected) if alarms_by_chart(ours(nd.alarms())) == expected else None
    try:
        listed, expected = nd.wait_for(linked, 30, interval=1, what="every alarm on its charts")
    except Exception:
        listed = nd.charts()
        assert alarms_by_chart(ours(nd.alarms())) == expected_by_chart(listed, V2, "netdrops.")
        raise
    by_chart = alarms_by_chart(ours(nd.alarms()))
    record_property("linked_after_s", round(time.monotonic() - t0, 1))

    # the roles, spelled out
    for role in ROLES:
        cid = "netdrops_roles.iface_{0}_drops".format(role.replace("-", "_"))
        packets = cid[:-len("_drops")] + "_packets"
        if role in HOST_ROLES:
            assert by_chart[cid] == {"netdrops_host_inbound_drops"}, role
            assert by_chart[packets] == {"netdrops_10m_arriving_packets", "netdrops_host_inbound_drop_ratio"}, role
        elif role in CONTAINER_ROLES:
            assert by_chart[cid] == {"netdrops_container_inbound_drops"}, role
            assert by_chart[packets] == {"netdrops_10m_arriving_packets", "netdrops_container_inbound_drop_ratio"}
        else:
            assert cid not in by_chart and packets not in by_chart, role
    assert "netdrops_local.iface_lo_drops" not in by_chart and "netdrops_local.iface_lo_packets" not in by_chart
    nics = [cid for cid, c in listed.items() if c["context"] == "netdrops.iface_drops"
            and c["chart_labels"].get("role") == "physical" and cid.startswith("netdrops_local.")]
    assert nics, "no physical NIC charted: nothing to check the host alarm on"
    for cid in nics:
        assert by_chart[cid] == {"netdrops_host_inbound_drops"}
    # no foreach in v2: one backlog alarm per softnet chart, not one per CPU
    for cid in ("netdrops_local.softnet_dropped", "netdrops_roles.softnet_dropped"):
        assert by_chart[cid] == {"netdrops_backlog_exceeded", "netdrops_1m_softnet_drops"}

    alarms = ours(nd.alarms())
    for a in alarms.values():
        assert_v2_took_every_key(V2[a["name"]], a, listed[a["chart"]])

    # `$netdrops_1m_softnet_drops` and `$netdrops_10m_arriving_packets` name other alarms: v2
    # picks, among the alarms of that name on the node, the best match for the chart
    squeeze = nd.api("/api/v1/alarm_variables", {"chart": "netdrops_local.softnet_squeeze"})
    assert squeeze["alerts"]["netdrops_1m_softnet_drops"]["instance"] == "netdrops_local.softnet_dropped"
    for cid, names in by_chart.items():
        if names & {"netdrops_host_inbound_drop_ratio", "netdrops_container_inbound_drop_ratio"}:
            variables = nd.api("/api/v1/alarm_variables", {"chart": cid})
            assert variables["alerts"]["netdrops_10m_arriving_packets"]["instance"] == cid

    # the first evaluation of the one-minute lookups, a minute after the charts appeared
    def minute_evaluated():
        # the role plugin's charts and the host's softnet charts (another lab's veth may get a
        # chart of its own meanwhile: its alarms have their own minute to wait)
        now = ours(nd.alarms())
        mine = [a for a in now.values() if a["lookup_after"] == -60
                and a["chart"].startswith(("netdrops_roles.", "netdrops_local.softnet_"))]
        return now if all(a["value"] is not None for a in mine) else None
    evaluated = nd.wait_for(minute_evaluated, 120, interval=2, what="the one-minute alarms evaluated")
    record_property("evaluated_after_s", round(time.monotonic() - t0, 1))
    worst_cpu = evaluated["netdrops_roles.softnet_dropped.netdrops_backlog_exceeded"]["value"]
    all_cpus = evaluated["netdrops_roles.softnet_dropped.netdrops_1m_softnet_drops"]["value"]
    record_property("fake_worst_cpu_per_s", worst_cpu)
    record_property("fake_all_cpus_per_s", all_cpus)
    # the first evaluation may see a few seconds less than the minute: compare the two alarms
    # of one chart, which read the same window (the sum of the CPUs would equal the total)
    assert 2.4 <= all_cpus <= 3.05, all_cpus
    assert 0.6 <= worst_cpu / all_cpus <= 0.72, "not the worst CPU: {0} of {1}".format(worst_cpu, all_cpus)
    for role in HOST_ROLES | CONTAINER_ROLES:
        side = "host" if role in HOST_ROLES else "container"
        key = "netdrops_roles.iface_{0}_drops.netdrops_{1}_inbound_drops".format(role, side)
        assert evaluated[key]["status"] == "CRITICAL" and 4 <= evaluated[key]["value"] <= 5.05, key
    assert log_problems(nd, ("netdrops", "ndroles")) == []


# -- the drop lab -------------------------------------------------------------------------------

def test_v2_lab_drops_raise_warning_and_v2s_alarm_notify_delivers_it(netdata_v2_factory, drop_lab,
                                                                      record_property):
    """The seed's rate (backlog 2, a few drops/s) on a lab veth under the real v2.11 with the
    plugin and the v2 alarms: the veth's container alarm goes WARNING (not CRITICAL), the host
    NIC's stays CLEAR, and once `delay: up 90s` has run out v2's own alarm-notify.sh (the
    harness's custom sender, which needs curl on PATH: /usr/bin) delivers the WARNING with the
    alarm's name, chart, role and text."""
    lab = drop_lab
    veth = lab.host_ifname
    veth_chart = "netdrops_local.iface_{0}_drops".format(charts.sanitize(veth))
    container = veth_chart + ".netdrops_container_inbound_drops"
    nd = netdata_v2_factory("alarms-v2-lab", notify=True)
    nd.install_netdrops("plugin")
    nd.start()
    watch = Watch(nd, record_property)
    nics = [cid for cid, c in nd.charts().items() if c["context"] == "netdrops.iface_drops"
            and c["chart_labels"].get("role") == "physical"]

    before = lab.kernel_counters()
    lab.run_traffic(SEED)
    t_seed = watch.mark("seed traffic")
    nd.wait_chart(veth_chart, timeout=30)
    on_veth = watch.until(lambda alarms: {a["name"] for a in alarms.values() if a["chart"] == veth_chart},
                          30, "alarms linked to the veth's chart")
    assert on_veth == {"netdrops_container_inbound_drops"}
    watch.status(container, RAISED, 150)
    warned = watch.poll()
    t_warn = t_seed + watch.since(container, warned[container]["status"], t_seed)
    seed = lab.kernel_counters().minus(before)
    rate = seed.rx_dropped / seed.when
    watch.mark("raised", warning_after_s=round(t_warn - t_seed, 1), kernel_drops_per_s=round(rate, 2),
               alarm_value=warned[container]["value"])
    assert 0.5 < rate < 2.97
    alarm = warned[container]
    assert alarm["status"] == "WARNING" and 0.5 < alarm["value"] < 2.97
    assert alarm["info"].startswith("inbound packets dropped per second over the last minute on container-facing "
                                    "interface {0} ".format(veth))
    assert alarm["exec"] == os.path.join(AGENT_V2.plugins_dir, "alarm-notify.sh")
    for cid in nics:
        assert warned[cid + ".netdrops_host_inbound_drops"]["status"] == "CLEAR"

    def delivered():
        watch.poll()
        return [n for n in nd.notifications()
                if n["name"] == "netdrops_container_inbound_drops" and n["chart"] == veth_chart]
    sent = nd.wait_for(delivered, 150, interval=1, what="the WARNING notification")
    t_sent = watch.mark("notification delivered", after_warning_s=round(watch.now() - t_warn, 1),
                        after_seed_s=round(watch.now() - t_seed, 1))
    note = sent[0]
    assert note["status"] == "WARNING" and note["roles"] == "sysadmin" and note["host"] == nd.hostname
    assert note["info"] == alarm["info"] and "netdrops-advisor" in note["info"]
    assert note["src"].endswith("file={0}".format(os.path.join(nd.health_dir, "netdrops.conf")))
    assert t_sent - t_warn >= 85, "notified before `delay: up 90s` ran out"
    assert not watch.ever(container, "CRITICAL"), "the seed rate must stay below CRITICAL"
    assert log_problems(nd) == []


# -- the OpenMetrics way in: go.d's prometheus module -------------------------------------------

# A stand-in for go.d's prometheus module: this v2.11 build has no go.d (Go is not in it), so this
# plugin scrapes the real exporter and writes the plugins.d lines go.d.plugin writes for such a
# job. What it reproduces, as read in Netdata's source (src/go/plugin/go.d/...):
# - the scrape: Accept `text/plain;version=0.0.4;q=1,*/*;q=0.1` (pkg/prometheus/client.go), so our
#   exporter answers Prometheus text and a counter's family is its `_total` sample name
#   (pkg/prometheus/parse.go); `*_info` families are skipped (modules/prometheus/collect.go);
# - one chart per series (collect.go collectCounter/collectGauge): id = metric name + `-label=value`
#   for each non-empty label in name order, spaces and backslashes in values made `_`,
#   apostrophes dropped (joinLabels); type = the job's full name `prometheus_<job>`
#   (agent/confgroup/config.go fullName(), agent/module/job.go getChartType());
# - the chart (modules/prometheus/charts.go addCounterChart/addGaugeChart): title = HELP without
#   apostrophes and final dot, units from the name's last word (`_total` skipped) plus `/s` for
#   counters, family = the name's first two words, context `prometheus.<job>.<metric>`, line
#   (area for bytes), priority 70000 (module.Priority); every label as a chart label (source
#   auto), then `_collect_job` (job.go createChart); plugin `go.d`, module `prometheus`;
# - one dimension whose id and name are the metric name, incremental for counters and absolute
#   for gauges, divisor 1000 (`precision`), each value sent as int(value * 1000); BEGIN carries
#   the microseconds since the job's last run once the chart has been updated (job.go
#   updateChart, pkg/netdataapi/api.go);
# - collection every `update_every` of the shipped job.
# Not reproduced: HOST lines (no virtual nodes here), go.d's limits on series per metric
# (max_time_series_per_metric 200) and its removal of series unseen for 10 scrapes.
GO_D_STANDIN = r'''#!/usr/bin/python3
import re, sys, time, urllib.request

URL, JOB, EVERY = @URL@, @JOB@, @EVERY@
TYPE = "prometheus_" + JOB
PRECISION = 1000
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

def parse(text):
    helps, types, series = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind.strip()
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if m:
                labels = sorted((k, re.sub(r'\\.', lambda e: ESCAPES.get(e.group(0), e.group(0)), v))
                                for k, v in LABEL.findall(m.group(2) or ""))
                series.append((m.group(1), labels, float(m.group(3))))
    return helps, types, series

def units(name):
    base, _, last = name.rpartition("_")
    if not base:
        return "events"
    if last in ("total", "sum", "count"):
        return units(base)
    return "Hz" if last == "hertz" else last

def family(name):
    parts = name.split("_", 2)
    fam = name if len(parts) < 3 else parts[0] + "_" + parts[1]
    trimmed = fam.rstrip("0123456789")
    return trimmed if len(trimmed) > 1 else fam

def title(name, help_text):
    if not help_text:
        return 'Metric "%s"' % name
    text = help_text.replace("'", "")
    return text[:-1] if text.endswith(".") else text

def chart_id(name, labels):
    return name + "".join("-%s=%s" % (k, v.replace(" ", "_").replace("\\", "_").replace("'", ""))
                          for k, v in labels if k and v)

def label_value(value):
    return value.replace("'", "").replace("\n", " ").replace("\r", " ").replace("\0", "")

def chart_lines(cid, name, kind, labels, help_text):
    u = units(name)
    if kind == "counter" and u not in ("seconds", "time"):
        u += "/s"
    ctype = "area" if u.endswith("bytes") or u.endswith("bytes/s") else "line"
    lines = ["CHART '%s.%s' '' '%s' '%s' '%s' 'prometheus.%s.%s' '%s' '70000' '%d' '' 'go.d' 'prometheus'"
             % (TYPE, cid, title(name, help_text), u, family(name), JOB, name, ctype, EVERY)]
    lines += ["CLABEL '%s' '%s' '1'" % (k, label_value(v)) for k, v in labels]
    lines += ["CLABEL '_collect_job' '%s' '1'" % JOB, "CLABEL_COMMIT",
              "DIMENSION '%s' '%s' '%s' '1' '%d' ''" % (name, name, "incremental" if kind == "counter" else "absolute",
                                                         PRECISION), ""]
    return lines

updated, last_run = set(), None
while True:
    started = time.time()
    since = int((started - last_run) * 1e6) if last_run else 0
    last_run = started
    try:
        request = urllib.request.Request(URL, headers={"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            helps, types, series = parse(resp.read().decode())
    except OSError as error:
        sys.stderr.write("go.d stand-in: scrape failed: %s\n" % error)
        helps, types, series = {}, {}, []
    out = []
    for name, labels, value in series:
        kind = types.get(name)
        if kind not in ("counter", "gauge") or name.endswith("_info"):
            continue
        cid = chart_id(name, labels)
        if cid not in updated:
            out += chart_lines(cid, name, kind, labels, helps.get(name, ""))
        # a chart's first update carries no interval (job.go updateChart: !chart.updated)
        begin = "BEGIN '%s.%s'" % (TYPE, cid)
        out.append(begin + " %d" % since if cid in updated and since else begin)
        out += ["SET '%s' = %d" % (name, int(value * PRECISION)), "END", ""]
        updated.add(cid)
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    time.sleep(max(0.0, started + EVERY - time.time()))
'''


def go_d_standin(url, job):
    return (GO_D_STANDIN.replace("@URL@", repr(url)).replace("@JOB@", repr(job["name"]))
            .replace("@EVERY@", str(int(job.get("update_every", 10)))))


def test_openmetrics_alarms_on_go_d_prometheus_charts_with_lab_drops(netdata_v2_factory, drop_lab,
                                                                     record_property):
    """health.d/v2/netdrops-openmetrics.conf in the real v2.11, on the charts go.d's prometheus
    module would make from the real `netdrops-collector openmetrics` exporter under the shipped
    job (conf.d/go.d/prometheus-netdrops.conf).

    go.d itself is not in this v2.11 build (../shared/netdata-v2/README.md: built without Go), so
    a stand-in plugin (GO_D_STANDIN above) scrapes the exporter as go.d does and writes the
    CHART/CLABEL/DIMENSION/BEGIN/SET lines go.d.plugin writes for it: the same chart ids,
    contexts, families, units, chart labels, dimension names, algorithm and divisor, read from
    go.d's source. What v2 then does with those lines (chart ids, labels, alarm matching,
    evaluation) is the real agent's.

    Every alarm loads on the charts it should (the container alarm on the lab veth's inbound
    series only, the host alarm on the NIC's, the backlog alarm once per CPU), with no log line,
    and the seed's rate on the veth raises its container alarm to WARNING."""
    lab = drop_lab
    veth = lab.host_ifname
    job = go_d_job()
    exporter = Exporter()
    try:
        nd = netdata_v2_factory("alarms-v2-openmetrics")
        shutil.copyfile(OPENMETRICS_HEALTH_FILE, os.path.join(nd.health_dir, "netdrops-openmetrics.conf"))
        os.chmod(os.path.join(nd.health_dir, "netdrops-openmetrics.conf"), 0o644)
        nd.add_plugin("godstandin", go_d_standin(exporter.url, job))
        before = lab.kernel_counters()
        lab.run_traffic(SEED)
        t_traffic = time.monotonic()
        nd.start()
        watch = Watch(nd, record_property)
        context = "prometheus.{0}.{1}".format(job["name"], openmetrics._IFACE_DROPS.sample_name)

        def veth_series():
            return {c["chart_labels"]["direction"]: cid for cid, c in nd.charts().items()
                    if c["context"] == context and c["chart_labels"].get("device") == veth}
        series = nd.wait_for(lambda: len(veth_series()) == 2 and veth_series(), 45, interval=1,
                             what="the veth's inbound and outbound series")
        inbound = series["inbound"]
        t_chart = watch.mark("veth series charted", chart=inbound)
        listed = nd.charts()
        chart = listed[inbound]
        # what go.d's naming gives, as v2 keeps it
        assert chart["type"] == "prometheus_" + job["name"] and chart["plugin"] == "go.d"
        assert chart["units"] == "packets/s" and chart["family"] == "netdrops_iface"
        assert [d["name"] for d in chart["dimensions"].values()] == [openmetrics._IFACE_DROPS.sample_name]
        assert chart["chart_labels"]["role"] == "veth" and chart["chart_labels"]["_collect_job"] == job["name"]
        record_property("veth_inbound_chart_id", inbound)

        def linked():
            now = nd.charts()
            expected = expected_by_chart(now, OPENMETRICS, "prometheus.")
            return (now, expected) if alarms_by_chart(ours(nd.alarms())) == expected else None
        try:
            listed, expected = nd.wait_for(linked, 30, interval=1, what="every alarm on its charts")
        except Exception:
            now = nd.charts()
            assert alarms_by_chart(ours(nd.alarms())) == expected_by_chart(now, OPENMETRICS, "prometheus.")
            raise
        by_chart = alarms_by_chart(ours(nd.alarms()))
        assert by_chart[inbound] == {"netdrops_openmetrics_container_inbound_drops"}
        assert series["outbound"] not in by_chart
        nics = [cid for cid, c in listed.items() if c["context"] == context
                and c["chart_labels"].get("role") == "physical" and c["chart_labels"]["direction"] == "inbound"]
        assert nics, "no physical NIC charted: nothing to check the host alarm on"
        for cid in nics:
            assert by_chart[cid] == {"netdrops_openmetrics_host_inbound_drops"}
        cpu_context = "prometheus.{0}.{1}".format(job["name"], openmetrics._SOFTNET_DROPPED.sample_name)
        cpus = {c["chart_labels"]["cpu"]: cid for cid, c in listed.items() if c["context"] == cpu_context}
        assert sorted(int(c) for c in cpus) == online_cpus()
        for cid in cpus.values():
            assert by_chart[cid] == {"netdrops_openmetrics_backlog_exceeded"}
        for a in ours(nd.alarms()).values():
            assert_v2_took_every_key(OPENMETRICS[a["name"]], a, listed[a["chart"]])

        key = inbound + ".netdrops_openmetrics_container_inbound_drops"
        cpu_key = cpus[str(1)] + ".netdrops_openmetrics_backlog_exceeded"
        watch.status(key, RAISED, 150)
        warned = watch.poll()
        seed = lab.kernel_counters().minus(before)
        rate = seed.rx_dropped / seed.when
        alarm = warned[key]
        t_raised = t_chart + watch.since(key, alarm["status"], t_chart)
        watch.mark("raised", warning_after_chart_s=round(t_raised - t_chart, 1),
                   warning_after_traffic_s=round(watch.t0 - t_traffic + t_raised, 1),
                   kernel_drops_per_s=round(rate, 2), alarm_value=alarm["value"], cpu1_status=warned[cpu_key]["status"])
        assert 0.5 < rate < 2.97
        assert alarm["status"] == "WARNING" and 0.5 < alarm["value"] < 2.97
        assert "container-facing interface {0} ".format(veth) in alarm["info"]
        for cid in nics:
            assert warned[cid + ".netdrops_openmetrics_host_inbound_drops"]["status"] == "CLEAR"
        # CPU 1 takes every drop of the lab (RPS), and under a backlog of 2 maybe more
        assert warned[cpu_key]["status"] in RAISED or watch.status(cpu_key, RAISED, 15)
        assert log_problems(nd, ("netdrops", "godstandin", "go.d stand-in")) == []
    finally:
        _rc, err = exporter.stop()
    assert "Traceback" not in err, err


# -- leaving one interface out: the advisor's exact lines -------------------------------------

def test_advisors_alarm_roles_are_the_shipped_files():
    """The advisor writes its exclusion lines from diagnosis.ALARMS_BY_ROLES: each alarm there has
    exactly that role list, in that order, on its `families:` (1.37) and `chart labels:` (v2) line,
    and every interface alarm that notifies anyone is in the table."""
    from netdrops_advisor.diagnose import diagnosis
    from test_alarms import HEALTH_FILE
    v137 = by_name(parse_health(HEALTH_FILE))
    for names, roles in diagnosis.ALARMS_BY_ROLES:
        for name in names:
            assert V2[name]["chart labels"] == "role=" + " ".join(roles), name
            assert v137[name]["families"] == " ".join(r + "/*" for r in roles), name
    for entities in (V2, v137):
        notifying = {name for name, e in entities.items()
                     if e["on"].startswith("netdrops.iface_") and e.get("to") != "silent"}
        assert notifying == set(diagnosis.INTERFACE_ALARMS)


# (device, role) of the charts the exclusion is checked on: two of a role per side, one of each
# left out by the advice, every other alarmed role once, and a wifi interface (no alarm)
EXCLUSION_DEVICES = [("ndeth0", "physical"), ("ndeth1", "physical"), ("ndbond0", "bond"), ("ndvlan0", "vlan"),
                     ("ndbr0", "bridge"), ("ndother0", "other"), ("ndveth0", "veth"), ("ndveth1", "veth"),
                     ("ndtun0", "tun"), ("ndwlan0", "wifi")]
EXCLUSION_PLUGIN = r"""#!/usr/bin/python3
import sys, time
devices = %r
for dev, role in devices:
    for what, ctx, dims in (("drops", "netdrops.iface_drops", ("inbound", "outbound")),
                            ("packets", "netdrops.iface_packets", ("received", "dropped"))):
        print("CHART netdrops_adv.iface_%%s_%%s '' '%%s' 'packets/s' '%%s/%%s' '%%s' line 1 1 '' 'ndadv.plugin' 'adv'"
              %% (dev, what, what, role, dev, ctx))
        print("CLABEL 'device' '%%s' 1\nCLABEL 'kind' '%%s' 1\nCLABEL 'role' '%%s' 1\nCLABEL_COMMIT" %% (dev, role, role))
        for dim in dims:
            print("DIMENSION '%%s' '%%s' incremental 1 1" %% (dim, dim))
n = 0
while True:
    n += 1
    for dev, _role in devices:
        print("BEGIN netdrops_adv.iface_%%s_drops\nSET 'inbound' = %%d\nSET 'outbound' = 0\nEND" %% (dev, n))
        print("BEGIN netdrops_adv.iface_%%s_packets\nSET 'received' = %%d\nSET 'dropped' = %%d\nEND" %% (dev, 100 * n, n))
    sys.stdout.flush()
    time.sleep(1)
""" % (EXCLUSION_DEVICES,)


def with_line(text, names, line):
    """A health file's text with `line` ("key: value") in place of that key's line in the named
    alarms, as a user edits it (the file's colon column kept)."""
    key, _, value = line.partition(":")
    out, current = [], None
    for raw in text.splitlines(True):
        head, sep, rest = raw.partition(":")
        if sep and head.strip() in ("alarm", "template"):
            current = rest.strip()
        if current in names and sep and head.strip() == key:
            raw = "{0}: {1}\n".format(head, value.strip())
        out.append(raw)
    return "".join(out)


@pytest.mark.parametrize("version", ["1.37", "v2.11"])
def test_unhandled_protocol_advice_leaves_out_only_the_named_interfaces(version, request):
    """The advisor's unhandled_protocol finding names the exact `families:` (1.37) and `chart
    labels:` (1.38+, v2) lines that keep the interface alarms off the interfaces receiving the
    harmless frames. Applied to the shipped file as written, the real agent puts each alarm on every
    chart of its roles except those interfaces' (here one physical and one veth interface; wifi
    has no alarm and the advice says so), and changes nothing else."""
    from netdrops_advisor.diagnose import diagnosis
    from netdrops_advisor.diagnose.evidence import IfaceEvidence
    from test_advisor_support import evidence, nic, veth
    from test_alarms import HEALTH_FILE, expected_names_on as expected_names_on_137
    excluded = {"ndeth0", "ndveth0"}
    ev = evidence(interfaces=[nic("ndeth0", inbound=30.0, rx=900.0), veth("ndveth0", inbound=20.0, rx=900.0),
                              IfaceEvidence(name="ndwlan0", kind="physical", role="wifi", inbound_drops=10.0)])
    ev.reasons = {"unhandled_proto": 60.0, "other": 0.0}
    det = diagnosis.detect_unhandled_protocol(ev, dict(target_drops_per_s=0.5, reasons_agree_share=0.8))
    advice = det.beyond_tuning
    assert "No netdrops alarm watches ndwlan0" in advice
    key = "families" if version == "1.37" else "chart labels"
    path = HEALTH_FILE if version == "1.37" else HEALTH_FILE_V2
    with open(path) as f:
        text = f.read()
    for names, _roles in diagnosis.ALARMS_BY_ROLES:
        advised = re.search(r"To leave [^:]* out of {0}: .*?`({1}: [^`]*)`".format(
            re.escape(" and ".join(names)), key), advice)
        assert advised, (names, advice)
        text = with_line(text, set(names), advised.group(1))
    factory = request.getfixturevalue("netdata_factory" if version == "1.37" else "netdata_v2_factory")
    nd = factory("exclusion-" + version)
    edited = parse_health(nd.write_config_file("health.d/netdrops.conf", text))
    changed = {a.get("template") for a, b in zip(parse_health(path), edited) if a != b}
    assert changed == set(diagnosis.INTERFACE_ALARMS), "the advice's lines did not replace exactly theirs"
    nd.add_plugin("ndadv", EXCLUSION_PLUGIN)
    nd.start()
    nd.wait_for(lambda: len([c for c in nd.charts() if c.startswith("netdrops_adv.")]) == 2 * len(EXCLUSION_DEVICES),
                30, what="the exclusion charts")
    listed = {cid: c for cid, c in nd.charts().items() if cid.startswith("netdrops_adv.")}
    expected = {}
    for cid, chart in listed.items():
        # what the shipped file puts there (no CPU charts here: no foreach names)
        names = expected_names_on(chart, V2) if version != "1.37" else expected_names_on_137(chart, [])
        if chart["family"].split("/", 1)[1] in excluded:
            names -= set(diagnosis.INTERFACE_ALARMS)
        if names:
            expected[cid] = names

    def linked():
        got = {cid: names for cid, names in alarms_by_chart(ours(nd.alarms())).items() if cid in listed}
        return got if got == expected else None
    try:
        nd.wait_for(linked, 30, interval=1, what="the alarms on their charts")
    except Exception:
        got = {cid: names for cid, names in alarms_by_chart(ours(nd.alarms())).items() if cid in listed}
        assert got == expected
        raise
    by_chart = alarms_by_chart(ours(nd.alarms()))
    # spelled out: the other interfaces of the excluded ones' roles keep their alarms
    assert by_chart["netdrops_adv.iface_ndeth1_drops"] == {"netdrops_host_inbound_drops"}
    assert by_chart["netdrops_adv.iface_ndveth1_drops"] == {"netdrops_container_inbound_drops"}
    assert "netdrops_adv.iface_ndeth0_drops" not in by_chart and "netdrops_adv.iface_ndveth0_drops" not in by_chart
    assert by_chart["netdrops_adv.iface_ndeth0_packets"] == {"netdrops_10m_arriving_packets"}
    if version != "1.37":
        assert log_problems(nd, ("netdrops", "ndadv")) == []
