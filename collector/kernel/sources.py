"""Where per-interface counters come from: one rtnetlink stats dump per tick, or /proc/net/dev.

A source reports, each tick, which interfaces' counters changed: a list of (key, old, new)
where key is the ifindex (netlink) or the name (procfs), old is None for an interface not seen
before, and counters are (rx_packets, tx_packets, rx_dropped, tx_dropped, rx_fifo_errors,
rx_missed_errors); plus the keys that vanished. Idle interfaces cost (almost) nothing: on a host
with thousands of veths most of them count nothing in a second.

Links (kind, peer, ...) are learned at start, from link events, and lazily for a key that shows
up in the counters before its event: never by re-reading every interface every tick.
"""

import logging

from . import netdev, netlink
from .containers import NetnsResolver
from .links import LinkTable, link_from_sysfs
from .statsdiff import StatsDiff

log = logging.getLogger("netdrops")

# Past this many unknown interfaces in one tick, one full link dump is cheaper than lookups.
FULL_DUMP_THRESHOLD = 64


class NetlinkSource:
    name = "netlink"

    def __init__(self, hostfs):
        self.rtnl = netlink.RtNetlink(subscribe_links=True)
        self.links = LinkTable(hostfs, NetnsResolver(hostfs, self.rtnl.get_nsid))
        self.stats = StatsDiff()
        self.added = []
        self.deleted = []
        self._full_refresh()

    def _full_refresh(self):
        before = set(self.links.by_index)
        self.links.replace_all(self.rtnl.dump_links())
        self.added.extend(l for i, l in self.links.by_index.items() if i not in before)
        # Their deletion events may be among those the kernel dropped: gone from the dump is gone.
        self.deleted.extend(i for i in before if i not in self.links.by_index)

    def close(self):
        self.rtnl.close()

    def _apply_link_events(self):
        new, deleted, overflowed = self.rtnl.drain_link_events()
        if overflowed:
            log.info("link events overflowed; re-reading all links")
            self._full_refresh()
            return
        before = {m["ifindex"]: self.links.by_index.get(m["ifindex"]) for m in new}
        self.links.apply_events(new, deleted)
        self.deleted.extend(deleted)
        for ifindex, prev in before.items():
            link = self.links.by_index.get(ifindex)
            if link is not None and link is not prev:
                self.added.append(link)

    def read_changes(self):
        self._apply_link_events()
        self.rtnl.request_stats()
        changed, vanished = self.stats.update(self.rtnl.recv_chunk)
        # An interface deleted between its link event and a stats dump never shows in the
        # counters; its deletion event alone tells the core to drop its charts. Deletions found
        # by a re-dump in resolve(), after the last call, are reported by this one.
        deleted, self.deleted = self.deleted, []
        return changed, vanished + [k for k in deleted if k not in self.stats.current]

    def resolve(self, keys):
        """Learn links for counters keys we have no link for (they appeared before their event)."""
        unknown = [k for k in keys if k not in self.links.by_index]
        if not unknown:
            return
        if len(unknown) > FULL_DUMP_THRESHOLD:
            self._full_refresh()
            return
        found = [m for m in (self.rtnl.get_link(k) for k in unknown) if m is not None]
        self.links.apply_events(found, [])
        self.added.extend(self.links.by_index[m["ifindex"]] for m in found)

    def link(self, key):
        return self.links.by_index.get(key)

    def all_links(self):
        return self.links.by_index.values()

    def peer_name(self, link):
        return self.links.peer_name(link)

    def master_name(self, link):
        return self.links.master_name(link)

    def take_added(self):
        """Links that appeared since the last call and are still here. A link learned by one
        read (an event, a lookup, a full re-read) can be gone by a later one before the core
        takes it; reported anyway, it would be charted after its deletion and never obsoleted."""
        by_index = self.links.by_index
        added = [link for link in self.added if by_index.get(link.ifindex) is link]
        self.added = []
        return added


class ProcfsSource:
    name = "procfs"

    def __init__(self, hostfs):
        self.hostfs = hostfs
        self.by_name = {}
        self.current = {}
        self.added = []

    def close(self):
        pass

    def read_changes(self):
        stats = netdev.read_netdev(self.hostfs)
        changed = []
        for name, cur in stats.items():
            prev = self.current.get(name)
            if prev != cur:
                changed.append((name, prev, cur))
            if name not in self.by_name:
                link = self.by_name[name] = link_from_sysfs(self.hostfs, name)
                self.added.append(link)
        vanished = [n for n in self.current if n not in stats]
        for name in vanished:
            self.by_name.pop(name, None)
        self.current = stats
        return changed, vanished

    def resolve(self, keys):
        pass  # every name was classified when read

    def link(self, key):
        return self.by_name.get(key)

    def all_links(self):
        return self.by_name.values()

    def peer_name(self, link):
        return None

    def master_name(self, link):
        return self.hostfs.link_target_name("sys/class/net", link.name, "master")

    def take_added(self):
        added, self.added = self.added, []
        return added


def open_source(kind, hostfs):
    """'auto' prefers rtnetlink and falls back to /proc/net/dev where the kernel refuses it."""
    if kind in ("auto", "netlink"):
        try:
            return NetlinkSource(hostfs)
        except (OSError, netlink.NetlinkError) as e:
            if kind == "netlink":
                raise
            log.warning("rtnetlink stats unavailable (%s); reading /proc/net/dev instead", e)
    return ProcfsSource(hostfs)
