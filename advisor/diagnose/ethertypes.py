"""Ethertypes a host commonly receives and drops as UNHANDLED_PROTO, with where they come from and
what stops them. The kernel records skb->protocol: an 802.3 frame whose type field is a length
(< 0x600), such as an STP BPDU, shows as 0x0004 (ETH_P_802_2), or 0x0001 for Novell raw 802.3.
Checked on 6.18: an STP BPDU sent into a veth showed protocol 4 and, with the kernel's stp/llc
code present (the bridge needs it), was freed by stp_pdu_rcv as NOT_SPECIFIED, not as
UNHANDLED_PROTO; LLDP (0x88cc) showed as UNHANDLED_PROTO in __netif_receive_skb_core and counted
in the interface's rx_dropped.
"""

# number -> (name, where it comes from and what stops it)
ETHERTYPES = {
    0x0001: ("Novell raw 802.3", "old IPX gear; nothing here speaks it"),
    0x0004: ("802.2 LLC (STP BPDUs, CDP, other LLC)",
             "a switch's spanning tree or discovery frames; turn them off on the switch port facing the host "
             "(e.g. BPDU filter on an edge port), or load the llc/stp code (a bridge does) so they are handled"),
    0x0806: ("ARP", "ARP on an interface without IPv4: give it an address or ignore"),
    0x8035: ("RARP", "reverse ARP from old boot clients"),
    0x8100: ("802.1Q VLAN", "tagged frames for a VLAN with no VLAN device here: create it or stop the trunk"),
    0x86DD: ("IPv6", "IPv6 on a host booted with IPv6 off (ipv6.disable=1): stop IPv6 on the sender, or ignore"),
    0x8809: ("Slow protocols (LACP, OAM)", "the switch port is in a LAG but the host has no bond: configure the "
             "bond or take the port out of the LAG"),
    0x888E: ("EAPOL (802.1X)", "the switch port asks for 802.1X authentication: turn it off or run a supplicant"),
    0x88A8: ("802.1ad QinQ", "double-tagged frames with no matching VLAN device here"),
    0x88B5: ("IEEE 802 local experimental 1", "a test or a private protocol (the drop lab sends these)"),
    0x88B6: ("IEEE 802 local experimental 2", "a test or a private protocol"),
    0x88CC: ("LLDP", "the switch announces itself; run lldpd (it takes them) or turn LLDP off on the switch port"),
    0x88E1: ("HomePlug AV", "powerline adapters announcing themselves"),
    0x88F7: ("PTP (IEEE 1588)", "time sync from a grandmaster: run ptp4l, or turn PTP off on the switch port"),
    0x8899: ("Realtek RRCP", "a cheap managed switch's own protocol"),
    0x893A: ("IEEE 1905.1", "mesh Wi-Fi or powerline gear discovering each other"),
    0x9000: ("Ethernet loopback (CTP)", "a switch's keepalive/loop detection frames"),
}


def number(text):
    """'0x88cc' (as a sample keys it) -> 0x88cc."""
    return int(text, 16)


def name(number):
    """'0x88cc LLDP' or '0x1234 (unknown ethertype)'."""
    known = ETHERTYPES.get(number)
    return "0x{0:04x} {1}".format(number, known[0] if known else "(an ethertype not in netdrops' table)")


def advice(number):
    known = ETHERTYPES.get(number)
    return known[1] if known else None
