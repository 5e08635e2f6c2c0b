"""Where per-interface counters come from: one rtnetlink stats dump per tick, or /proc/net/dev.

A source maps a key (ifindex for netlink, name for procfs) to a counters tuple
(rx_packets, tx_packets, rx_dropped, tx_dropped, rx_fifo_errors, rx_missed_errors), and knows
each key's Link. Links are learned at start, from link events, and lazily for a key that shows
up in the counters before its event: never by re-reading every interface every tick.
"""

import logging

from . import netdev, netlink
from .links import LinkTable, link_from_sysfs

log = logging.getLogger("netdrops")

# Past this many unknown interfaces in one tick, one full link dump is cheaper than lookups.
FULL_DUMP_THRESHOLD = 64


class NetlinkSource:
    name = "netlink"

    def __init__(self, hostfs):
        self.rtnl = netlink.RtNetlink(subscribe_links=True)
        self.links = LinkTable(hostfs)
        self.added = []
        self._full_refresh()

    def _full_refresh(self):
        before = set(self.links.by_index)
        self.links.replace_all(self.rtnl.dump_links())
        self.added.extend(l for i, l in self.links.by_index.items() if i not in before)

    def close(self):
        self.rtnl.close()

    def read(self):
        new, deleted, overflowed = self.rtnl.drain_link_events()
        if overflowed:
            log.info("link events overflowed; re-reading all links")
            self._full_refresh()
        else:
            before = {m["ifindex"]: self.links.by_index.get(m["ifindex"]) for m in new}
            self.links.apply_events(new, deleted)
            for ifindex, prev in before.items():
                link = self.links.by_index.get(ifindex)
                if link is not None and link is not prev:
                    self.added.append(link)
        return self.rtnl.dump_stats()

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

    def peer_name(self, link):
        return self.links.peer_name(link)

    def master_name(self, link):
        return self.links.master_name(link)

    def take_added(self):
        added, self.added = self.added, []
        return added


class ProcfsSource:
    name = "procfs"

    def __init__(self, hostfs):
        self.hostfs = hostfs
        self.by_name = {}
        self.added = []

    def close(self):
        pass

    def read(self):
        stats = netdev.read_netdev(self.hostfs)
        for name in stats:
            if name not in self.by_name:
                link = link_from_sysfs(self.hostfs, name)
                self.by_name[name] = link
                self.added.append(link)
        if len(self.by_name) != len(stats) or any(n not in stats for n in self.by_name):
            self.by_name = {n: l for n, l in self.by_name.items() if n in stats}
        return stats

    def resolve(self, keys):
        pass

    def link(self, key):
        return self.by_name.get(key)

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
