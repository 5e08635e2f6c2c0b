"""Naming the container behind a veth: name conventions, cgroup paths, and a real namespace."""

import os
import subprocess
import uuid

import pytest

from netdrops_collector.kernel import containers, netlink
from netdrops_collector.kernel.hostfs import HostFS


@pytest.mark.parametrize("name, expected", [
    ("veth101i0", "ct101"), ("veth9001i3", "ct9001"), ("tap200i1", "vm200"),
    ("fwpr101p0", "guest101"), ("vethd3adb33", None), ("eth0", None),
])
def test_proxmox_names(name, expected):
    assert containers.container_from_name(name) == expected


DOCKER_ID = "4f1c2a" + "0" * 58


@pytest.mark.parametrize("cgroup, expected", [
    ("0::/system.slice/docker-{0}.scope\n".format(DOCKER_ID), ("docker", DOCKER_ID)),
    ("12:pids:/docker/{0}\n0::/docker/{0}\n".format(DOCKER_ID), ("docker", DOCKER_ID)),
    ("0::/lxc.payload.web01\n", ("lxc", "web01")),
    ("0::/lxc/101/ns/init.scope\n", ("lxc", "101")),
    ("0::/machine.slice/libpod-{0}.scope/container\n".format(DOCKER_ID), ("podman", DOCKER_ID)),
    ("0::/user.slice/user-0.slice/session-1.scope\n", None),
])
def test_container_from_cgroup(cgroup, expected):
    assert containers.container_from_cgroup(cgroup) == expected


def test_docker_name_from_config():
    assert containers.docker_name_from_config('{"ID":"x","Name":"/nginx-proxy","State":{}}') == "nginx-proxy"
    assert containers.docker_name_from_config("{}") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="making a network namespace needs root")
def test_resolver_names_a_real_namespace_behind_a_veth():
    ns = "ndres-" + uuid.uuid4().hex[:6]
    host_if = "ndr" + uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
        rtnl = netlink.RtNetlink()
        try:
            link = [l for l in rtnl.dump_links() if l["name"] == host_if][0]
            assert link["link_netnsid"] is not None
            resolver = containers.NetnsResolver(HostFS(""), rtnl.get_nsid)
            assert resolver.name_for(link["link_netnsid"]) == "netns:" + ns
        finally:
            rtnl.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
