"""A small client for Netdata's REST API (v1, as served by 1.37 to 2.x), and the parsers of
its answers.

The client only moves bytes and turns every failure into one NetdataError sentence; the parse_*
functions take the decoded JSON, so tests feed them recorded answers of a real Netdata.

A window is read with one /api/v1/data request per *context* (not per chart): with
`options=jsonwrap` the answer carries `chart_ids` beside `dimension_names`, which tells the
columns of different charts apart. `unaligned` is required: without it 1.37 aligns a one-point
query to a multiple of the window, which can end before the agent's first entry and yield only
nulls (see tests/fixtures/netdata_api/data_aligned_window_before_history.json).
"""

import collections
import json
import math
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from ..errors import (NetdataAuthRequired, NetdataFormatError, NetdataHTTPError, NetdataTimeout,
                      NetdataUnreachable, NetdataVersionError, UnknownNode)
from ..jsonshape import finite_number, require_dict, require_list

DEFAULT_URL = "http://127.0.0.1:19999"

# The Netdata versions whose v1 API this client reads: from 1.37 (the recorded answers in
# tests/fixtures/netdata_api/ are 1.37.1's; older ones lack /api/v1/contexts or chart_ids in
# context queries) through 2.x, which still serves /api/v1. A later major version may answer in
# shapes that parse and mean something else: it is refused, not guessed at.
OLDEST_VERSION = (1, 37)
FIRST_UNKNOWN_MAJOR = 3
VERSION_RE = re.compile(r"v?(\d{1,6})\.(\d{1,6})(?!\d)", re.ASCII)  # bounded: int() of 5,000 digits raises

# What a parse_* function raises for an answer of a shape it does not know; the client turns
# exactly these into NetdataFormatError.
PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)

# 1.37's answer to /host/<name>/... for a name it does not hold (HTTP 404, text/html).
UNKNOWN_HOST_TEXT = "does not maintain a database for host"
# 1.37's answer to /api/v1/data for a context it does not have, or a window without data.
NO_METRICS_TEXT = "No metrics where matched to query"

# Bearer protection (Netdata v2, `[web] bearer token protection = yes`, off by default). Seen
# on the real v2.11: with it on, every /api/v1 call without a valid token answers HTTP 412 "You
# need to be authorized to access this resource" (v2's source: 403 when a signed-in identity lacks
# the permission; a proxy in front may say 401). v2 reads the token from `X-Netdata-Auth: Bearer
# TOKEN`, the header its own dashboard sends (checked on v2.11: a malformed token sent there is
# logged by the agent as invalid); it also takes `Authorization: Bearer`, "for historical reasons".
AUTH_STATUSES = (401, 403, 412)
TOKEN_HEADER = "X-Netdata-Auth"
TOKEN_ENV = "NETDROPS_NETDATA_TOKEN"   # where the advisor takes the token from (argv shows in ps)

NodeInfo = collections.namedtuple(
    "NodeInfo", "hostname version uid mirrored_hosts cores_total kernel_version container")
MirroredHost = collections.namedtuple("MirroredHost", "hostname guid reachable hops")
ContextMeta = collections.namedtuple("ContextMeta", "first_time last_time collected")
Column = collections.namedtuple("Column", "chart_id dim_id dim_name value latest")
Alarm = collections.namedtuple("Alarm", "name chart status value units info")


class Window(collections.namedtuple(
        "Window", "context group after before first_entry last_entry update_every columns")):
    """One context over a time window: one value per (chart, dimension)."""

    @property
    def seconds(self):
        """The span the values cover: from the later of the query start and the first stored
        point, to the last point, each point standing for update_every seconds."""
        start = max(self.after, self.first_entry) if self.first_entry else self.after
        return max(0, self.before - start) + self.update_every

    def by_chart(self):
        """{chart_id: {dimension name: value}}."""
        out = {}
        for col in self.columns:
            out.setdefault(col.chart_id, {})[col.dim_name] = col.value
        return out


class NetdataClient:
    """GETs against one Netdata, optionally through a parent's /host/<node>/ prefix."""

    def __init__(self, base_url=DEFAULT_URL, timeout=5.0, node=None, token=None):
        self.base_url = normalize_url(base_url)
        self.timeout = timeout
        self.node = node
        # A secret: sent in a header, never put into a sentence, a report or a log line.
        self._token = check_token(token) if token else None
        self.requests = 0  # how many requests this client made (the tests keep it small)
        self.version = None  # the agent's version text, once info() has read it

    def for_node(self, node):
        client = NetdataClient(self.base_url, self.timeout, node, self._token)
        return client

    @property
    def where(self):
        """How sentences name this Netdata: its URL, and the node when read through a parent."""
        if self.node:
            return "node {0!r} at {1}".format(self.node, self.base_url)
        return self.base_url

    @property
    def who(self):
        """'Netdata v1.37.1 at URL' once the version is known, else 'Netdata at URL'."""
        return "Netdata {0}at {1}".format(self.version + " " if self.version else "", self.where)

    def url_for(self, path, params=None):
        prefix = "/host/" + urllib.parse.quote(self.node, safe="") if self.node else ""
        query = "?" + urllib.parse.urlencode(params, safe=",*") if params else ""
        return self.base_url + prefix + path + query

    def get_bytes(self, path, params=None):
        url = self.url_for(path, params)
        shown = path + ("?" + urllib.parse.urlencode(params, safe=",*") if params else "")
        self.requests += 1
        headers = {"Accept": "application/json", "User-Agent": "netdrops-advisor"}
        if self._token:
            headers[TOKEN_HEADER] = "Bearer " + self._token
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            body = _error_body(err)
            if err.code == 404 and UNKNOWN_HOST_TEXT in body:
                raise UnknownNode("Netdata at {0} holds no node named {1!r}.".format(
                    self.base_url, self.node))
            if err.code in AUTH_STATUSES:
                raise NetdataAuthRequired(self._refusal(err.code, shown, body), err.code)
            detail = ": " + body if body else ""
            raise NetdataHTTPError("{0} answered HTTP {1} to {2}{3}.".format(
                self.who, err.code, shown, detail.rstrip(".")), err.code)
        except urllib.error.URLError as err:
            if isinstance(err.reason, (socket.timeout, TimeoutError)):
                raise NetdataTimeout("Netdata at {0} did not answer {1} within {2:g} s.".format(
                    self.where, path, self.timeout))
            raise NetdataUnreachable("No Netdata answers at {0} ({1}).".format(
                self.base_url, _reason(err.reason)))
        except (socket.timeout, TimeoutError):
            raise NetdataTimeout("Netdata at {0} did not answer {1} within {2:g} s.".format(
                self.where, path, self.timeout))
        except (ConnectionError, OSError) as err:
            # e.g. the connection reset while reading the body
            raise NetdataUnreachable("The connection to Netdata at {0} failed while reading {1} ({2}).".format(
                self.where, path, _reason(err)))

    def _refusal(self, status, shown, body):
        """The sentence for a 401/403/412: a token is needed, or the one given was not taken.
        A 403 without a token may also be an address refused by `[web] allow ... from` (1.37
        answers that with 403 "You are not allowed to access this resource.")."""
        start = "{0} answered HTTP {1} to {2}".format(self.who, status, shown)
        if not self._token and status == 403:
            return ("{0} ({1}): its netdata.conf `[web] allow connections from` / `allow dashboard from` "
                    "may leave this machine out, or it wants a bearer token, which the advisor takes from "
                    "the environment variable {2} (or --token).".format(start, body.rstrip(".") or "refused", TOKEN_ENV))
        if not self._token:
            return ("{0}: it refuses API calls without a bearer token (Netdata's bearer token protection "
                    "is on); give the advisor one in the environment variable {1} (or with --token).".format(
                        start, TOKEN_ENV))
        if status == 403:
            return "{0}: the bearer token given does not allow this call.".format(start)
        return ("{0}: it did not accept the bearer token given (expired, mistyped, or issued by "
                "another agent).".format(start))

    def get_json(self, path, params=None):
        body = self.get_bytes(path, params)
        try:
            return decode_json(body)
        except ValueError as err:
            raise NetdataFormatError("{0} sent malformed JSON for {1} ({2}).".format(
                self.who, path, err))

    # -- the endpoints the advisor uses ------------------------------------------------------

    def info(self):
        """/api/v1/info; refuses (NetdataVersionError) a Netdata whose API this client does not read."""
        info = self._parsed(parse_info, "/api/v1/info")
        self.version = info.version
        check_version(info.version, self.who)
        return info

    def contexts(self):
        return self._parsed(parse_contexts, "/api/v1/contexts")

    def window(self, context, seconds, group):
        # whole seconds, at least one: after=0 would mean "from the beginning" to Netdata
        params = {"context": context, "after": -max(1, int(round(seconds))), "points": 1, "group": group,
                  "format": "json", "options": "jsonwrap,unaligned"}
        return self._parsed(parse_window, "/api/v1/data", params, context=context, group=group)

    def chart_labels(self, context):
        params = {"context": context, "options": "instances,labels"}
        return self._parsed(parse_chart_labels, "/api/v1/context", params)

    def alarms(self):
        return self._parsed(parse_alarms, "/api/v1/alarms")

    def _parsed(self, parser, path, params=None, **kwargs):
        doc = self.get_json(path, params)
        try:
            return parser(doc, **kwargs)
        except PARSE_ERRORS as err:
            raise NetdataFormatError("{0} answered {1} in a shape the advisor does not "
                                     "know ({2}: {3}).".format(self.who, path, type(err).__name__, err))


def parse_version(text):
    """'v1.37.1', 'v1.44.0-122-nightly', '2.0.3' -> (major, minor); None when it is not a version."""
    match = VERSION_RE.match(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_version(text, who):
    """Raise NetdataVersionError for a Netdata older than OLDEST_VERSION or of an unknown major
    version. A version text that is not a version (a custom build) is given the benefit of the
    doubt: the parsers still refuse shapes they do not know."""
    version = parse_version(text)
    if version is None:
        return
    if version < OLDEST_VERSION:
        raise NetdataVersionError(
            "{0} is older than v{1}.{2}, the first whose API the advisor reads: upgrade Netdata, or run "
            "netdrops-advisor on that host with --source kernel.".format(who, *OLDEST_VERSION))
    if version[0] >= FIRST_UNKNOWN_MAJOR:
        raise NetdataVersionError(
            "{0} is newer than the Netdata versions the advisor knows (v{1}.{2} to v{3}.x): upgrade "
            "netdrops, or run netdrops-advisor on that host with --source kernel.".format(
                who, OLDEST_VERSION[0], OLDEST_VERSION[1], FIRST_UNKNOWN_MAJOR - 1))


def check_token(token):
    """The token as given, if a header can carry it; ValueError (which never shows the token)
    otherwise. v2's tokens are UUIDs; other forms are left to the agent to judge."""
    if not isinstance(token, str) or not token or not all("!" <= c <= "~" for c in token):
        raise ValueError("a bearer token is one word of printable ASCII characters (no spaces or line ends)")
    return token


def normalize_url(url):
    """'host:port' or 'http://host:port/' -> 'http://host:port'; ValueError for what is not a URL."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    # http.client raises InvalidURL / UnicodeEncodeError, which the client does not expect, for
    # spaces or control characters anywhere and for non-ASCII text in the path.
    if any(c.isspace() or not c.isprintable() for c in url) or not parts.path.isascii():
        raise ValueError("spaces, control or non-ASCII characters in {0!r}".format(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL: {0!r}".format(url))
    try:
        parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("bad port in {0!r}".format(url))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def decode_json(body):
    if not body:
        raise ValueError("empty answer")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError("not UTF-8: {0}".format(err))
    try:
        return json.loads(text)
    except RecursionError:
        # json's decoder recurses per nesting level: '[' * 100000 would escape as a traceback
        raise ValueError("nested too deeply")


def _error_body(err):
    """The first line of an error answer (Netdata explains its 4xx in plain text)."""
    try:
        text = err.read(512).decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def _reason(reason):
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    text = getattr(reason, "strerror", None) or str(reason)
    return text[0].lower() + text[1:] if text else "unknown error"


# -- parsers: decoded JSON -> records ----------------------------------------------------------

def _text(value, what):
    """Names and labels: the code after the parsers slices, hashes and lower()s them."""
    if not isinstance(value, str):
        raise TypeError("{0} {1!r} is not text".format(what, value))
    return value


def _int(value, what):
    """int() of a JSON number or numeric text; 1e999 decodes to inf, whose int() raises
    OverflowError, which is none of the errors the client turns into NetdataFormatError."""
    try:
        return int(value)
    except OverflowError:
        raise ValueError("{0} {1!r} is out of range".format(what, value))


def parse_info(doc):
    doc = require_dict(doc, "/api/v1/info")
    hosts = []
    statuses = doc.get("mirrored_hosts_status") or []
    by_name = {s.get("hostname"): s for s in statuses if isinstance(s, dict)}
    for name in require_list(doc.get("mirrored_hosts") or [], "mirrored_hosts"):
        status = by_name.get(_text(name, "mirrored host"), {})   # --all-nodes asks for it by name
        hosts.append(MirroredHost(name, status.get("guid"), bool(status.get("reachable", True)),
                                  _int(status.get("hops", 0) or 0, "hops")))
    cores = doc.get("cores_total")
    try:
        cores = int(cores) if cores not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        cores = None
    version = doc["version"]
    if not isinstance(version, str):
        raise TypeError("version is not text")
    return NodeInfo(hostname=hosts[0].hostname if hosts else None, version=version,
                    uid=doc.get("uid"), mirrored_hosts=hosts, cores_total=cores,
                    kernel_version=doc.get("kernel_version"), container=doc.get("container"))


def parse_contexts(doc):
    """/api/v1/contexts -> {context: ContextMeta}."""
    contexts = require_dict(require_dict(doc, "/api/v1/contexts")["contexts"], "contexts")
    return {name: ContextMeta(meta.get("first_time_t"), meta.get("last_time_t"), bool(meta.get("collected")))
            for name, meta in contexts.items() if isinstance(meta, dict)}


def _number(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("value {0!r} is not a number".format(value))
    if value != value:  # NaN
        return None
    # 1e999 decodes to inf, and float() of a 400-digit integer raises OverflowError: neither is
    # a value Netdata sends, and inf would pass on as a rate of infinite drops.
    try:
        value = float(value)
    except OverflowError:
        raise ValueError("value {0:.20}... is out of range".format(str(value)))
    if math.isinf(value):
        raise ValueError("value {0!r} is not finite".format(value))
    return value


def parse_window(doc, context, group):
    """A one-point jsonwrap answer of /api/v1/data -> Window (absolute values: Netdata shows
    outbound drops negated)."""
    doc = require_dict(doc, "/api/v1/data")
    chart_ids = require_list(doc["chart_ids"], "chart_ids")
    dim_ids = require_list(doc["dimension_ids"], "dimension_ids")
    names = require_list(doc["dimension_names"], "dimension_names")
    latest = require_list(doc.get("latest_values") or [None] * len(dim_ids), "latest_values")
    if not (len(chart_ids) == len(dim_ids) == len(names) == len(latest)):
        raise ValueError("chart_ids, dimension_ids, dimension_names and latest_values differ in length")
    rows = require_list(require_dict(doc["result"], "result")["data"], "result data")
    if len(rows) > 1:
        raise ValueError("{0} points where one was asked for".format(len(rows)))
    row = require_list(rows[0], "the point")[1:] if rows else [None] * len(dim_ids)
    if len(row) != len(dim_ids):
        raise ValueError("{0} values for {1} dimensions".format(len(row), len(dim_ids)))
    columns = []
    for chart_id, dim_id, name, value, last in zip(chart_ids, dim_ids, names, row, latest):
        value = _number(value)
        last = _number(last)
        columns.append(Column(_text(chart_id, "chart id"), _text(dim_id, "dimension id"),
                              _text(name, "dimension name"), abs(value) if value is not None else None,
                              abs(last) if last is not None else None))
    update_every = _int(doc.get("update_every") or 1, "update_every")
    return Window(context=context, group=group, after=_int(doc["after"], "after"),
                  before=_int(doc["before"], "before"), first_entry=_int(doc.get("first_entry") or 0, "first_entry"),
                  last_entry=_int(doc.get("last_entry") or 0, "last_entry"),
                  update_every=max(1, update_every), columns=columns)


def parse_chart_labels(doc):
    """/api/v1/context?options=instances,labels -> {chart_id: {label: value}}."""
    charts = require_dict(require_dict(doc, "/api/v1/context").get("charts") or {}, "charts")
    out = {}
    for chart_id, chart in charts.items():
        # dict() would also take a list of pairs ['ab'] as {'a': 'b'}; label values are names
        labels = require_dict(require_dict(chart, chart_id).get("labels") or {}, chart_id + " labels")
        out[chart_id] = {key: _text(value, "label " + key) for key, value in labels.items()}
    return out


def parse_alarms(doc):
    """/api/v1/alarms (raised ones) -> [Alarm], WARNING and CRITICAL only."""
    alarms = require_dict(require_dict(doc, "/api/v1/alarms").get("alarms") or {}, "alarms")
    out = []
    for alarm in alarms.values():
        if not isinstance(alarm, dict) or alarm.get("status") not in ("WARNING", "CRITICAL"):
            continue
        value = alarm.get("value")
        if not finite_number(value):
            value = None
        name, chart, units, info = (alarm.get(k) for k in ("name", "chart", "units", "info"))
        for key, text in (("name", name), ("chart", chart), ("units", units), ("info", info)):
            if text is not None:
                _text(text, "alarm " + key)   # shown and lower()ed after parsing
        out.append(Alarm(name, chart, alarm.get("status"), value, units, info))
    return sorted(out, key=lambda a: (a.status != "CRITICAL", a.name or ""))


def is_no_metrics(error):
    """True for 1.37's 404 'No metrics where matched to query.' (no such context, or no data)."""
    return isinstance(error, NetdataHTTPError) and error.status == 404 and NO_METRICS_TEXT in str(error)
