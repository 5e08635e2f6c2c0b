"""Where the evidence comes from: a Netdata (one node, a child through a parent, every node of a
parent) or the kernel, and what the local machine adds when the evidence is about itself."""

import ipaddress
import os
import socket
import time
import urllib.parse

from netdrops_collector.kernel import links, reasons, sources, tuning
from netdrops_collector.kernel.hostfs import HostFS

from . import hostfacts, kernel_sampler, netdata_source, trace_sample
from ..errors import UnknownNode
from ..diagnose.evidence import TUNING_KEYS


def is_loopback_url(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_node(info, node, where):
    """Raise UnknownNode unless the parent holds `node` (by hostname or machine GUID)."""
    known = [h.hostname for h in info.mirrored_hosts]
    guids = [h.guid for h in info.mirrored_hosts if h.guid]
    if node in known or node in guids:
        return
    raise UnknownNode("Netdata at {0} holds no node named {1!r}; it holds: {2}.".format(
        where, node, ", ".join(known) or "none"))


def from_netdata(client, window, hostfs=None):
    """Evidence of the client's node (client.node set for a child read through a parent)."""
    info, mode, windows, labels, alarms, notes = netdata_source.read_node(client, window)
    node = client.node or info.hostname or urllib.parse.urlsplit(client.base_url).hostname
    evidence = netdata_source.build_evidence(node, client.base_url, info, mode, windows, labels, alarms, notes)
    evidence.requests = client.requests
    if is_loopback_url(client.base_url) and (client.node is None or client.node == _local_hostname(info)):
        add_live_reasons(evidence)
        enrich_local(evidence, hostfs or HostFS.from_env())
    return evidence


# Without netdrops.drop_reasons, the advisor (root, on the machine itself) counts the reasons
# live: for at most this long, not Netdata's whole window, so a run waits seconds, not a minute.
LIVE_REASONS_SECONDS = 10.0


def drops_to_explain(evidence):
    """Whether the window shows drops that reasons could explain."""
    counts = [i.inbound_drops for i in evidence.interfaces] + [c.dropped for c in evidence.cpus]
    counts += list(evidence.sockets.values())
    return any(count for count in counts if count)


def add_live_reasons(evidence):
    """Reasons for a window Netdata has none for: counted in the kernel over the next seconds and
    scaled to the window (drops of a few per second are steady; the report says it was done)."""
    if evidence.reasons is not None or os.geteuid() != 0 or not drops_to_explain(evidence):
        return
    seconds = min(LIVE_REASONS_SECONDS, evidence.window_seconds)
    if seconds <= 0:
        return
    counted = count_reasons_live(seconds)
    if isinstance(counted, str):  # why they could not be counted here
        evidence.reasons_note = "{0} Counting them live failed too: {1}".format(evidence.reasons_note or "", counted)
        return
    scale = evidence.window_seconds / seconds
    evidence.reasons = {name: count * scale for name, count in counted.items()}
    evidence.reasons_source = "kernel"
    evidence.reasons_note = None
    evidence.notes = [n for n in evidence.notes if n != netdata_source.NO_REASONS_CHART]
    evidence.source_detail += ("; drop reasons counted live by the advisor for {0:g} s after Netdata's window "
                               "(Netdata has no netdrops.drop_reasons chart) and scaled to it".format(seconds))


def count_reasons_live(seconds):
    """{reason: drops} over the next `seconds`, counted in the kernel; a sentence when the counters
    cannot be opened here."""
    try:
        counters = reasons.open_local()
    except reasons.ReasonsUnavailable as error:
        return str(error)
    try:
        before = counters.read()
        time.sleep(seconds)
        after = counters.read()
    except OSError as error:
        return "reading the counters failed ({0})".format(error.strerror or error)
    finally:
        counters.close()
    return {name: float(total - before.get(name, 0)) for name, total in after.items()}


def _local_hostname(info):
    return info.hostname


def enrich_local(evidence, hostfs):
    """The evidence is about this machine: read what Netdata does not chart (RX queues, RPS
    masks, isolated CPUs, kinds of interfaces Netdata only names) and the settings as they are now."""
    evidence.host = hostfacts.read_host_facts(hostfs)
    now = tuning.read_sysctls(hostfs)
    for key in TUNING_KEYS:
        if now.get(key) is not None:
            evidence.tuning[key] = now[key]
    evidence.tuning_source = "kernel"
    guessed = [i for i in evidence.interfaces if i.kind_source == "name"]
    known = _links_by_name(hostfs) if guessed else {}
    for iface in guessed:
        if iface.name in known:
            link, peer = known[iface.name]
            iface.kind, iface.role, iface.kind_source = link.kind, link.role, "netlink"
            iface.peer, iface.container = peer, iface.container or link.container
        elif hostfs.exists("sys/class/net", iface.name):
            link = links.link_from_sysfs(hostfs, iface.name)
            iface.kind, iface.role, iface.kind_source = link.kind, link.role, "sysfs"
            iface.container = iface.container or link.container
    hostfacts.enrich_interfaces(evidence, hostfs)
    evidence.udp_socket_drops = hostfacts.udp_sockets_now(hostfs)
    hostfacts.name_socket_owners(evidence, hostfs.path("proc"))
    add_detail_samples(evidence)


def add_detail_samples(evidence):
    """Where a count is not enough (which ethertype, which port, which function), a short look at
    the drops' own records; only as root on the machine itself (trace_sample.py)."""
    names = trace_sample.wanted(evidence.reasons, evidence.window_seconds)
    if names:
        evidence.reason_samples.append(
            trace_sample.sample(names, seconds=min(trace_sample.MAX_SECONDS, evidence.window_seconds)))


def _links_by_name(hostfs):
    """{name: (Link, peer name)} from the collector's link table (one rtnetlink dump): kinds,
    veth peers and the containers behind them, for interfaces Netdata's own charts only name."""
    try:
        source = sources.open_source("netlink", hostfs)
    except Exception:  # no rtnetlink here (old kernel, seccomp): sysfs will do
        return {}
    try:
        table = source.links
        return {link.name: (link, table.peer_name(link)) for link in table.by_index.values()}
    finally:
        source.close()


def from_kernel(window, hostfs=None, node=None):
    hostfs = hostfs or HostFS.from_env()
    sample = kernel_sampler.sample_kernel(window, hostfs=hostfs)
    host = hostfacts.read_host_facts(hostfs)
    evidence = kernel_sampler.evidence_from_sample(sample, node or socket.gethostname(), host)
    hostfacts.enrich_interfaces(evidence, hostfs)
    hostfacts.name_socket_owners(evidence, hostfs.path("proc"))
    add_detail_samples(evidence)
    return evidence
