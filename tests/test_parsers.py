"""The collector's parsers against fixture files of every layout, and against this kernel."""

import os

import pytest

from netdrops_collector.kernel import netdev, netlink, snmp, softnet
from netdrops_collector.kernel.counters import WRAP32, MonotonicCounter
from netdrops_collector.errors import ParseError
from netdrops_collector.kernel.hostfs import HostFS

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture_text(*parts):
    with open(os.path.join(FIXTURES, *parts)) as f:
        return f.read()


# -- softnet_stat ----------------------------------------------------------------------------

def test_softnet_every_layout_in_one_file():
    rows = softnet.parse_softnet(fixture_text("softnet", "layouts_mixed"))
    assert [r.cpu for r in rows] == [0, 1, 2, 3, 4, 5]
    assert [r.cpu_id_exact for r in rows] == [True, True, True, False, False, False]
    first = rows[0]  # 15 columns, 6.4+
    assert (first.processed, first.dropped, first.time_squeeze) == (0x1e240, 7, 3)
    assert (first.received_rps, first.flow_limit_count, first.backlog_len) == (0x11, 2, 5)
    assert (first.input_qlen, first.process_qlen) == (3, 2)
    thirteen = rows[2]
    assert (thirteen.backlog_len, thirteen.input_qlen, thirteen.process_qlen) == (0x10, None, None)
    eleven, ten, nine = rows[3], rows[4], rows[5]
    assert (eleven.received_rps, eleven.flow_limit_count, eleven.backlog_len) == (5, 1, None)
    assert (ten.received_rps, ten.flow_limit_count) == (6, None)
    assert (nine.processed, nine.dropped, nine.time_squeeze, nine.received_rps) == (0x400, 4, 5, None)


@pytest.mark.parametrize("name, message", [
    ("broken_torn", "line 2"),
    ("broken_not_hex", "not hexadecimal"),
    ("broken_12_columns", "12 fields"),
])
def test_softnet_broken_files_name_file_and_line(name, message):
    with pytest.raises(ParseError) as err:
        softnet.parse_softnet(fixture_text("softnet", name), "/proc/net/softnet_stat")
    assert "/proc/net/softnet_stat" in str(err.value)
    assert message in str(err.value)


def test_softnet_empty_file_is_an_error():
    with pytest.raises(ParseError):
        softnet.parse_softnet("\n")


def test_softnet_live_kernel_has_one_row_per_online_cpu():
    rows = softnet.read_softnet(HostFS(""))
    online = softnet.parse_cpu_list(open("/sys/devices/system/cpu/online").read())
    assert sorted(r.cpu for r in rows) == online


def make_host_tree(tmp_path, softnet_text, online="0-3", possible="0-3"):
    os.makedirs(tmp_path / "proc/net")
    os.makedirs(tmp_path / "sys/devices/system/cpu")
    (tmp_path / "proc/net/softnet_stat").write_text(softnet_text)
    (tmp_path / "sys/devices/system/cpu/online").write_text(online + "\n")
    (tmp_path / "sys/devices/system/cpu/possible").write_text(possible + "\n")
    return HostFS(str(tmp_path))


def test_offline_cpu_on_old_kernel_is_flagged(tmp_path):
    host = make_host_tree(tmp_path, fixture_text("softnet", "old_kernel_offline_cpu"), online="0-1,3")
    rows = softnet.read_softnet(host)
    assert len(rows) == 3
    assert softnet.row_ids_are_guesses(rows, host)


def test_all_cpus_online_old_kernel_is_not_flagged(tmp_path):
    host = make_host_tree(tmp_path, fixture_text("softnet", "old_kernel_offline_cpu"), online="0-2", possible="0-2")
    assert not softnet.row_ids_are_guesses(softnet.read_softnet(host), host)


def test_cpu_list_parsing():
    assert softnet.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


# -- wrap-safe counters ----------------------------------------------------------------------

def test_counter_wraps_at_2_32():
    c = MonotonicCounter(WRAP32 - 5)
    assert c.update(3) == 8  # 5 to reach 2^32, then 3 more
    assert c.update(10) == 7
    assert c.total == 15


# -- /proc/net/dev -------------------------------------------------------------------------

def test_netdev_fixture():
    stats = netdev.parse_netdev(fixture_text("proc", "netdev_linux618"))
    assert stats["eth0"] == (786, 552, 0, 0, 0, 0)
    assert set(stats) == {"lo", "ifb0", "ifb1", "eth0"}


def test_netdev_columns_map_to_drop_fields():
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
            "  veth1: 100 20 1 7 2 0 0 0 200 30 0 9 0 0 0 0\n")
    assert netdev.parse_netdev(text)["veth1"] == (20, 30, 7, 9, 2, 0)


def test_netdev_short_line_is_an_error():
    text = " face |bytes\n  eth0: 1 2 3\n"
    with pytest.raises(ParseError, match="line 2"):
        netdev.parse_netdev(text)


# -- /proc/net/snmp, netstat -------------------------------------------------------------------

def test_snmp_fixture_socket_counters():
    tables = snmp.parse_snmp_pairs(fixture_text("proc", "snmp_linux618"), "snmp")
    ext = snmp.parse_snmp_pairs(fixture_text("proc", "netstat_linux618"), "netstat")
    drops = snmp.socket_drops(tables, ext)
    assert set(drops) == {"udp_rcvbuf_errors", "udp_in_errors", "udp_sndbuf_errors", "tcp_listen_drops",
                          "tcp_listen_overflows"}
    assert drops["udp_rcvbuf_errors"] == tables["Udp"]["RcvbufErrors"]
    assert drops["tcp_listen_drops"] == ext["TcpExt"]["ListenDrops"]


def test_snmp_counters_a_kernel_lacks_are_left_out_not_zero():
    """No /proc/net/netstat: the TCP listen counters are unknown, which a 0 would hide."""
    tables = snmp.parse_snmp_pairs(fixture_text("proc", "snmp_linux618"), "snmp")
    drops = snmp.socket_drops(tables, {})
    assert set(drops) == {"udp_rcvbuf_errors", "udp_in_errors", "udp_sndbuf_errors"}


def test_snmp_wanted_counters_of_the_fixture_equal_the_full_parse():
    text = fixture_text("proc", "netstat_linux618")
    full = snmp.parse_snmp_pairs(text, "netstat")
    assert snmp.parse_snmp_pairs(text, "netstat", snmp.NETSTAT_WANTED) == {
        "TcpExt": {name: full["TcpExt"][name] for name in snmp.NETSTAT_WANTED["TcpExt"]}}


def test_snmp_value_count_mismatch_is_an_error():
    with pytest.raises(ParseError, match="2 names but 1 values"):
        snmp.parse_snmp_pairs("Udp: InDatagrams RcvbufErrors\nUdp: 5\n", "snmp")


# -- rtnetlink ----------------------------------------------------------------------------------

def test_netlink_stats_match_sysfs():
    rtnl = netlink.RtNetlink()
    try:
        stats = rtnl.dump_stats()
        links = {l["ifindex"]: l["name"] for l in rtnl.dump_links()}
    finally:
        rtnl.close()
    assert set(stats) == set(links)
    for ifindex, name in links.items():
        base = "/sys/class/net/{0}/statistics/".format(name)
        rx_dropped = int(open(base + "rx_dropped").read())
        tx_dropped = int(open(base + "tx_dropped").read())
        assert stats[ifindex][2] == rx_dropped and stats[ifindex][3] == tx_dropped
        assert stats[ifindex][0] <= int(open(base + "rx_packets").read())


def capture_stats_dump():
    """The raw bytes of one RTM_GETSTATS dump from this kernel, as a list of buffers."""
    rtnl = netlink.RtNetlink()
    buffers = []
    try:
        rtnl.seq += 1
        payload = netlink.IF_STATS_MSG.pack(0, 0, 0, 1)
        rtnl.sock.send(netlink.build_request(netlink.RTM_GETSTATS, payload, rtnl.seq))
        while True:
            n = rtnl.sock.recv_into(rtnl.buf)
            buffers.append(bytes(rtnl.buf[:n]))
            if netlink.parse_stats_buffer(buffers[-1], {}):
                return buffers
    finally:
        rtnl.close()


def test_netlink_truncated_stats_buffer_is_an_error():
    first = capture_stats_dump()[0]
    with pytest.raises(ParseError, match="truncated"):
        netlink.parse_stats_buffer(first[:-7], {})


def test_netlink_stats_attribute_of_wrong_type_is_an_error():
    first = bytearray(capture_stats_dump()[0])
    first[30] = 9  # the rtattr type of the first message's stats block
    with pytest.raises(ParseError, match="unexpected attribute"):
        netlink.parse_stats_buffer(bytes(first), {})


def test_netlink_single_link_lookup_and_vanished_index():
    rtnl = netlink.RtNetlink()
    try:
        lo = rtnl.get_link(1)
        assert lo["name"] == "lo"
        assert rtnl.get_link(2 ** 31 - 1) is None
    finally:
        rtnl.close()
