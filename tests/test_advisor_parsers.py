"""The advisor's own parsers (text -> records), on text captured from the project VM (kernel
6.18, 2 CPUs) and on the shapes other kernels and containers give."""

from netdrops_advisor.sources import hostfacts, procstat, udp_sockets
from netdrops_advisor.sources.netdata_api import normalize_url

# /proc/stat and /proc/net/udp as read on the project VM while a drop lab's receiver sat full.
PROC_STAT = """\
cpu  10845 1258 18336 304757 1722 0 2938 20 0 0
cpu0 3074 613 6618 156661 1055 0 1790 8 0 0
cpu1 7771 644 11717 148096 666 0 1147 12 0 0
intr 715894 0 0 0
"""
PROC_STAT_LATER = """\
cpu  10945 1258 18436 304857 1722 0 3038 20 0 0
cpu0 3074 613 6618 156761 1055 0 1790 8 0 0
cpu1 7871 644 11817 148096 666 0 1247 12 0 0
"""
PROC_NET_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 1979: 0100007F:1FBD 00000000:0000 07 00000000:00000000 00:00000000 00000000   999        0 65745 2 000000001b1ada2c 0         
 8086: 0DE1FEA9:B798 00000000:0000 07 00000000:00000680 00:00000000 00000000     0        0 97240 2 0000000032f1fad0 28        
 9999: torn line
"""
PROC_NET_UDP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 7
"""


def test_proc_stat_per_cpu_busy_and_softirq():
    before, after = procstat.parse_proc_stat(PROC_STAT), procstat.parse_proc_stat(PROC_STAT_LATER)
    assert sorted(before) == [0, 1]  # the aggregate line is not a CPU
    util = procstat.utilisation(before, after)
    assert util[0] == (0.0, 0.0)  # only idle time passed on CPU 0
    busy, softirq = util[1]
    assert busy == 100.0 and round(softirq, 1) == 33.3


def test_udp_sockets_with_drops_and_their_addresses():
    sockets = udp_sockets.parse_proc_net_udp(PROC_NET_UDP)
    assert [(s.address, s.port, s.drops, s.rx_queue, s.inode) for s in sockets] == [
        ("127.0.0.1", 8125, 0, 0, 65745), ("169.254.225.13", 47000, 28, 0x680, 97240)]
    v6 = udp_sockets.parse_proc_net_udp(PROC_NET_UDP6, "udp6")
    assert (v6[0].address, v6[0].port, v6[0].drops) == ("::1", 53, 7)
    later = [s._replace(drops=s.drops + 5) if s.inode == 97240 else s for s in sockets]
    assert [(s.inode, d) for s, d in udp_sockets.drops_between(sockets, later)] == [(97240, 5)]


def test_cpu_lists_uid_maps_netns_and_hz():
    assert hostfacts.parse_cpu_list_file("0-3,8\n") == [0, 1, 2, 3, 8]
    assert hostfacts.parse_cpu_list_file("(null)\n") == []  # nohz_full unset on some kernels
    assert hostfacts.parse_cpu_list_file("") == [] and hostfacts.parse_cpu_list_file(None) == []
    assert hostfacts.parse_uid_map("         0          0 4294967295\n") is False
    assert hostfacts.parse_uid_map("         0     100000      65536\n") is True
    assert hostfacts.parse_netns_list("ndlab-1-0 (id: 0)\nother\nct7 (id: 3)\n") == {0: "ndlab-1-0", 3: "ct7"}
    assert hostfacts.parse_kernel_hz("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n") == 250


def test_urls():
    assert normalize_url("127.0.0.1:19999") == "http://127.0.0.1:19999"
    assert normalize_url("https://parent.example/netdata/") == "https://parent.example/netdata"
    for bad in ("ftp://x", "http://", "http://host:port"):
        try:
            normalize_url(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
