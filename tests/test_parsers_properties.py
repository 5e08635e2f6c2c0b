"""Property tests of the collector's parsers: any input parses or raises the parser's own error
(naming the file), and well-formed input always gives back exactly the numbers written."""

from hypothesis import given, settings, strategies as st

from netdrops_collector import config, jobs
from netdrops_collector.kernel import netdev, netlink, snmp, softnet, tuning
from netdrops_collector.errors import ParseError
from stats_dumps import DONE, stats_message

u32 = st.integers(min_value=0, max_value=2 ** 32 - 1)
u64 = st.integers(min_value=0, max_value=2 ** 64 - 1)
CASES = settings(max_examples=400, deadline=None)


@CASES
@given(st.text(alphabet="0123456789abcdefABCDEFxz \t\n-", max_size=400))
def test_softnet_any_text_parses_or_names_the_file(text):
    try:
        rows = softnet.parse_softnet(text, "/proc/net/softnet_stat")
    except ParseError as error:
        assert "/proc/net/softnet_stat" in str(error)
        return
    assert rows and all(r.processed >= 0 for r in rows)


@CASES
@given(st.lists(st.tuples(st.sampled_from(softnet.KNOWN_WIDTHS), st.lists(u32, min_size=15, max_size=15)),
                min_size=1, max_size=8))
def test_softnet_round_trip(rows):
    lines, expected = [], []
    for i, (width, values) in enumerate(rows):
        values = list(values)
        if width >= 13:
            values[12] = 100 + i  # CPU ids must be unique
        lines.append(" ".join("{0:08x}".format(v) for v in values[:width]))
        expected.append((width, values))
    parsed = softnet.parse_softnet("\n".join(lines) + "\n")
    for row, (width, values) in zip(parsed, expected):
        assert (row.processed, row.dropped, row.time_squeeze) == tuple(values[:3])
        assert row.received_rps == (values[9] if width >= 10 else None)
        assert row.backlog_len == (values[11] if width >= 13 else None)
        assert row.cpu_id_exact == (width >= 13)


@CASES
@given(st.text(max_size=300))
def test_netdev_any_text(text):
    try:
        netdev.parse_netdev(text, "/proc/net/dev")
    except ParseError as error:
        assert "/proc/net/dev" in str(error)


@CASES
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9._-]{0,14}", fullmatch=True), st.lists(u64, min_size=16, max_size=16),
                       max_size=6))
def test_netdev_round_trip(ifaces):
    text = "Inter-| x\n face |y\n" + "".join(
        "{0}: {1}\n".format(name, " ".join(map(str, v))) for name, v in ifaces.items())
    parsed = netdev.parse_netdev(text)
    for name, v in ifaces.items():
        assert parsed[name] == (v[1], v[9], v[3], v[11], v[4], 0)


@CASES
@given(st.text(max_size=300))
def test_snmp_any_text(text):
    try:
        snmp.parse_snmp_pairs(text, "/proc/net/snmp")
    except ParseError as error:
        assert "/proc/net/snmp" in str(error)


counter_name = st.sampled_from(["InErrors", "RcvbufErrors", "SndbufErrors", "ListenDrops", "ListenOverflows",
                                 "InDatagrams", "ListenDropsX", "Listen"])
snmp_table = st.tuples(st.sampled_from(["Udp", "UdpLite", "TcpExt", "Ip", "Tcp"]),
                       st.lists(counter_name, min_size=1, max_size=6, unique=True), st.lists(u64, min_size=6, max_size=6))


@CASES
@given(st.lists(snmp_table, max_size=5), st.booleans())
def test_snmp_wanted_counters_equal_the_full_parse(tables, torn):
    """What the collector reads every tick (only the wanted counters, found by search) equals
    what a full parse of the same text gives."""
    lines = []
    for proto, names, values in tables:
        lines.append("{0}: {1}".format(proto, " ".join(names)))
        lines.append("{0}: {1}".format(proto, " ".join(map(str, values[:len(names) - torn]))))
    text = "\n".join(lines) + "\n"
    wanted = dict(snmp.SNMP_WANTED, **snmp.NETSTAT_WANTED)
    try:
        full = snmp.parse_snmp_pairs(text, "/proc/net/snmp")
    except ParseError:
        full = None
    try:
        picked = snmp.parse_snmp_pairs(text, "/proc/net/snmp", wanted)
    except ParseError as error:
        assert full is None and "/proc/net/snmp" in str(error)
        return
    if full is not None:
        assert picked == {proto: {n: full[proto][n] for n in names if n in full[proto]}
                          for proto, names in wanted.items() if proto in full}


@CASES
@given(st.lists(st.tuples(st.sampled_from(["Udp6InErrors", "Udp6RcvbufErrors", "Udp6RcvbufErrorsX", "Udp6SndbufErrors",
                                           "UdpLite6InErrors", "Ip6InReceives"]),
                          st.one_of(u64.map(str), st.sampled_from(["x", ""])), st.sampled_from([" ", "\t", "  \t"])),
                max_size=8))
def test_snmp6_wanted_counters_equal_the_full_parse(lines):
    text = "".join("{0}{1}{2}\n".format(name, gap, value) for name, value, gap in lines)
    try:
        full = snmp.parse_snmp6(text, "/proc/net/snmp6")["Udp6"]
    except ParseError:
        full = None
    try:
        picked = snmp.parse_snmp6(text, "/proc/net/snmp6", snmp.SNMP6_WANTED)["Udp6"]
    except ParseError:
        assert full is None
        return
    if full is not None:
        assert picked == {n: full[n] for n in snmp.SNMP6_WANTED if n in full}


@CASES
@given(st.binary(max_size=600))
def test_netlink_stats_any_bytes(data):
    try:
        netlink.parse_stats_buffer(data, {})
    except (ParseError, netlink.NetlinkError):
        pass


@CASES
@given(st.dictionaries(st.integers(min_value=1, max_value=2 ** 31 - 1), st.lists(u64, min_size=25, max_size=25),
                       max_size=5))
def test_netlink_stats_round_trip(ifaces):
    buf = b"".join(stats_message(i, c) for i, c in ifaces.items())
    buf += DONE
    out = {}
    assert netlink.parse_stats_buffer(buf, out)
    assert out == {i: (c[0], c[1], c[6], c[7], c[14], c[15]) for i, c in ifaces.items()}


@CASES
@given(st.binary(max_size=600))
def test_netlink_links_any_bytes(data):
    try:
        netlink.parse_link_buffer(data, [], [])
    except (ParseError, netlink.NetlinkError):
        pass


@CASES
@given(st.text(max_size=40))
def test_sysctl_values_never_raise(text):
    for key in tuning.SYSCTL_KEYS:
        value = tuning.parse_sysctl_value(key, text)
        assert value is None or isinstance(value, (int, str))
    mask = tuning.parse_cpu_mask(text)
    assert mask is None or mask >= 0


@CASES
@given(st.integers(min_value=0, max_value=2 ** 128 - 1), st.integers(min_value=1, max_value=128))
def test_cpu_mask_format_round_trip(mask, ncpus):
    mask &= (1 << ncpus) - 1
    assert tuning.parse_cpu_mask(tuning.format_cpu_mask(mask, ncpus)) == mask


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@CASES
@given(st.dictionaries(st.sampled_from(sorted(config.DEFAULTS) + ["jobs", "name"]), yaml_values, max_size=5))
def test_job_config_valid_or_config_error(document):
    try:
        parsed = jobs.parse_jobs(document, None)
    except config.ConfigError:
        return
    for name, cfg in parsed:
        assert isinstance(name, str) and cfg["update_every"] >= 1
