"""The collector core over the real kernel (the rtnetlink source), inside a network namespace
the test makes: interfaces that vanish, come back under their name, or live less than a tick,
as containers do on a Docker or Proxmox host."""

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

# Runs inside the namespace; one JSON line per tick: the chart ids created and obsoleted.
TICKS = textwrap.dedent("""
    import json, subprocess, sys
    from netdrops_collector import config, core
    from netdrops_collector.kernel.hostfs import HostFS

    def ip(*argv):
        subprocess.run(["ip"] + list(argv), check=True)

    collector = core.Collector(config.build({"chart_interfaces": ["ct1"], "chart_kinds": []}), HostFS(""))
    for step in json.loads(sys.argv[1]):
        for command in step:
            ip(*command)
        collector.collect()
        changes = collector.take_changes()
        print(json.dumps({"created": sorted(c.id for c in changes.created if c.id.startswith("iface_")),
                          "obsoleted": sorted(c.id for c in changes.obsoleted)}), flush=True)
""")

ADD = ["link", "add", "ct1", "type", "veth", "peer", "name", "ct1p"]
DELETE = ["link", "del", "ct1"]


@pytest.fixture
def namespace(requires_root):
    name = "ndcore-{0}".format(uuid.uuid4().hex[:8])
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def ticks(namespace, steps):
    """Run the core in `namespace`, one tick after each step's ip commands; the changes."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", TICKS, json.dumps(steps)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines()]


def charts_of(device):
    return sorted("iface_{0}_{1}".format(device, what) for what in ("drop_ratio", "drops", "packets"))


def test_a_veth_made_again_under_its_name_within_a_tick_keeps_its_charts(namespace):
    start, again = ticks(namespace, [[ADD], [DELETE, ADD]])
    assert start["created"] == charts_of("ct1")
    # A new ifindex, the same chart ids: defined again, and not marked obsolete after that.
    assert again == {"created": charts_of("ct1"), "obsoleted": []}


def test_a_veth_gone_for_good_has_its_charts_obsoleted(namespace):
    start, gone = ticks(namespace, [[ADD], [DELETE]])
    assert start["created"] == charts_of("ct1")
    assert gone == {"created": [], "obsoleted": charts_of("ct1")}


def test_a_veth_that_lived_less_than_a_tick_is_never_charted(namespace):
    (tick,) = ticks(namespace, [[ADD, DELETE]])
    assert tick == {"created": [], "obsoleted": []}


# The source alone: what it reports as added between two takes, over the real kernel.
ADDED = textwrap.dedent("""
    import json, subprocess, sys
    from netdrops_collector.kernel.hostfs import HostFS
    from netdrops_collector.kernel.sources import NetlinkSource

    def ip(*argv):
        subprocess.run(["ip"] + list(argv), check=True)

    source = NetlinkSource(HostFS(""))
    for step in json.loads(sys.argv[1]):
        for command in step:
            ip(*command)
        source.read_changes()
    print(json.dumps(sorted(link.name for link in source.take_added())))
""")


def test_links_added_and_gone_again_before_they_are_taken_are_not_reported(namespace):
    """A link learned in one read and deleted by the next (as a link-event overflow's full
    re-read can do between the core's takes) must not come back as added: the core would chart
    an interface that no longer exists, and nothing would ever obsolete that chart."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    steps = [[ADD, ["link", "add", "ct2", "type", "veth", "peer", "name", "ct2p"]], [DELETE]]
    out = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", ADDED, json.dumps(steps)],
                         check=True, capture_output=True, text=True, env=env).stdout
    assert json.loads(out) == ["ct2", "ct2p", "lo"]  # lo from the first read, which is still here
