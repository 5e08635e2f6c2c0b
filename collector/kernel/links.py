"""What each interface is (physical, veth, bridge, bond, vlan, tun, other), refreshed on change.

Kinds come from rtnetlink (IFLA_LINKINFO kind, IFLA_PARENT_DEV_NAME) with a sysfs look for
what netlink does not say (wireless, a bus device on kernels without IFLA_PARENT_DEV_NAME). Both
are read once per new or changed interface, never per tick.
"""

from . import containers, tuning

KINDS = ("physical", "veth", "bridge", "bond", "vlan", "tun", "other")

KIND_BY_LINKINFO = {
    "veth": "veth",
    "bridge": "bridge",
    "bond": "bond",
    "team": "bond",
    "vlan": "vlan",
    "tun": "tun",
}

ARPHRD_LOOPBACK = 772


class Link:
    __slots__ = ("ifindex", "name", "kind", "peer_ifindex", "peer_netnsid", "master", "slave_kind",
                 "wireless", "container", "rx_queues", "rps_on")

    def __init__(self, ifindex, name, kind, peer_ifindex=None, peer_netnsid=None, master=None,
                 slave_kind=None, wireless=False, container=None, rx_queues=None, rps_on=False):
        self.ifindex = ifindex
        self.name = name
        self.kind = kind
        self.peer_ifindex = peer_ifindex
        self.peer_netnsid = peer_netnsid
        self.master = master
        self.slave_kind = slave_kind
        self.wireless = wireless
        self.container = container
        self.rx_queues = rx_queues
        self.rps_on = rps_on

    @property
    def bond_slave(self):
        return self.slave_kind in ("bond", "team")

    @property
    def role(self):
        """The kind, refined where alarms treat an interface differently (bond slaves drop
        duplicates by design, wireless drops are the air's). Chart families use it."""
        if self.bond_slave:
            return "bond-slave"
        if self.wireless:
            return "wifi"
        if self.name == "lo":
            return "loopback"
        return self.kind


def classify(msg, has_bus_device):
    """rtnetlink link attributes (+ whether sysfs shows a bus device) -> one of KINDS."""
    kind = msg.get("kind")
    if kind:
        return KIND_BY_LINKINFO.get(kind, "other")
    if msg.get("arphrd") == ARPHRD_LOOPBACK:
        return "other"
    if msg.get("parent_dev") or has_bus_device:
        return "physical"
    return "other"


class LinkTable:
    """ifindex -> Link for the namespace the collector runs in."""

    def __init__(self, hostfs, netns_names=None):
        self.hostfs = hostfs
        self.by_index = {}
        self.netns_names = netns_names  # containers.NetnsResolver, or None

    def _link_from_msg(self, msg):
        name = msg["name"] or "if{0}".format(msg["ifindex"])
        sysdir = "sys/class/net/" + name
        has_bus = msg.get("parent_dev") is None and not msg.get("kind") and self.hostfs.exists(sysdir, "device")
        kind = classify(msg, has_bus)
        wireless = kind == "physical" and (self.hostfs.exists(sysdir, "wireless") or self.hostfs.exists(sysdir, "phy80211"))
        peer = msg.get("link")
        if peer == msg["ifindex"]:
            peer = None
        link = Link(msg["ifindex"], name, kind, peer_ifindex=peer, peer_netnsid=msg.get("link_netnsid"),
                    master=msg.get("master"), slave_kind=msg.get("slave_kind"), wireless=wireless,
                    container=containers.container_from_name(name), rx_queues=msg.get("rx_queues"))
        if link.container is None and link.peer_netnsid is not None and self.netns_names is not None:
            link.container = self.netns_names.name_for(link.peer_netnsid)
        try:
            link.rps_on = tuning.rps_enabled(tuning.read_rx_queues(self.hostfs, name))
        except OSError:
            link.rps_on = False  # vanished between the event and this read
        return link

    def replace_all(self, msgs):
        old = self.by_index
        self.by_index = {}
        for msg in msgs:
            prev = old.get(msg["ifindex"])
            if prev is not None and prev.name == msg["name"] and prev.master == msg.get("master"):
                self.by_index[msg["ifindex"]] = prev  # unchanged: keep what we already learned
            else:
                self.by_index[msg["ifindex"]] = self._link_from_msg(msg)

    def apply_events(self, new_or_changed, deleted):
        for msg in new_or_changed:
            prev = self.by_index.get(msg["ifindex"])
            if prev is None or prev.name != msg["name"] or prev.master != msg.get("master"):
                self.by_index[msg["ifindex"]] = self._link_from_msg(msg)
        for ifindex in deleted:
            self.by_index.pop(ifindex, None)

    def peer_name(self, link):
        """The peer's name when it lives in this namespace; else 'ifindex N (netns id M)'."""
        if link.peer_ifindex is None:
            return None
        if link.peer_netnsid is None or link.peer_netnsid < 0:
            peer = self.by_index.get(link.peer_ifindex)
            return peer.name if peer else None
        return "ifindex {0} (netns id {1})".format(link.peer_ifindex, link.peer_netnsid)

    def master_name(self, link):
        master = self.by_index.get(link.master) if link.master else None
        return master.name if master else None


def classify_sysfs(hostfs, name):
    """The kind of an interface from sysfs alone (the /proc/net/dev fallback, no rtnetlink).

    Less exact than netlink: a virtual device with a peer (iflink != ifindex) is taken for a veth."""
    sysdir = "sys/class/net/" + name
    uevent = hostfs.read_value(sysdir, "uevent") or ""
    devtype = ""
    for line in uevent.splitlines():
        if line.startswith("DEVTYPE="):
            devtype = line[len("DEVTYPE="):]
    if devtype in ("bridge", "bond", "vlan"):
        return devtype, False
    if devtype == "wlan":
        return "physical", True
    if hostfs.exists(sysdir, "tun_flags"):
        return "tun", False
    if hostfs.exists(sysdir, "device"):
        return "physical", hostfs.exists(sysdir, "wireless") or hostfs.exists(sysdir, "phy80211")
    if hostfs.read_value(sysdir, "iflink") not in (None, hostfs.read_value(sysdir, "ifindex")):
        return "veth", False
    return "other", False


def link_from_sysfs(hostfs, name):
    kind, wireless = classify_sysfs(hostfs, name)
    sysdir = "sys/class/net/" + name
    slave_kind = "bond" if hostfs.exists(sysdir, "bonding_slave") else None
    link = Link(name, name, kind, slave_kind=slave_kind, wireless=wireless,
                container=containers.container_from_name(name))
    try:
        link.rps_on = tuning.rps_enabled(tuning.read_rx_queues(hostfs, name))
    except OSError:
        pass
    return link
