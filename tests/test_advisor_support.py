"""Helpers for the advisor's tests (no tests here): recorded Netdata answers and a loopback
server that serves them, and Evidence built from numbers (the diagnosis is a pure function of
Evidence, so a case is just its numbers)."""

import http.server
import json
import os
import threading
import urllib.parse

from netdrops_advisor.diagnose.evidence import CpuEvidence, Evidence, HostFacts, IfaceEvidence

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "netdata_api")


def recorded(name):
    """A recorded answer: {'recorded_from', 'situation', 'request', 'status', 'content_type', 'body'}."""
    with open(os.path.join(FIXTURES, name + ".json")) as f:
        return json.load(f)


def recorded_json(name):
    return json.loads(recorded(name)["body"])


class Replay:
    """A loopback HTTP server (127.0.0.1, a free port) answering GETs with (status, content type,
    body): from {(path, context or None): answer} (else 1.37's 404 for an unknown command), or
    from a function (path, context) -> answer. Bodies are text or bytes."""

    def __init__(self, routes):
        self.answer_for = routes if callable(routes) else lambda path, context: routes.get(
            (path, context)) or routes.get((path, None), (404, "text/plain", "Unsupported v1 API command"))
        self.seen = []
        self.seen_headers = []   # the request headers, in the order of seen
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                context = urllib.parse.parse_qs(url.query).get("context", [None])[0]
                replay.seen.append(self.path)
                replay.seen_headers.append(dict(self.headers))
                status, ctype, body = replay.answer_for(url.path, context)
                data = body.encode("utf-8") if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:{0}".format(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


DEFAULT_TUNING = {"netdev_max_backlog": 1000, "netdev_budget": 300, "netdev_budget_usecs": 8000,
                  "rmem_default": 212992, "rmem_max": 212992, "wmem_default": 212992, "wmem_max": 212992,
                  "rps_sock_flow_entries": 0, "rps_default_mask": "0"}


def local_host(ncpus=2, isolated=(), init_netns=True, hz=250):
    return HostFacts(local=True, is_root=True, online_cpus=list(range(ncpus)), isolated_cpus=list(isolated),
                     hz=hz, init_netns=init_netns, unprivileged_userns=not init_netns, proc_sys_read_only=False)


def evidence(window=10.0, cpus=None, interfaces=(), sockets=None, tuning=None, host=None, source="kernel"):
    """Evidence of a quiet 2-CPU machine unless told otherwise; counts are over `window` s."""
    ev = Evidence(node="case", source=source, source_detail="a test case", window_seconds=window,
                  start_time=0, end_time=int(window))
    ev.cpus = cpus if cpus is not None else [CpuEvidence(cpu=i, processed=100.0, dropped=0.0, squeezed=0.0)
                                             for i in range(2)]
    ev.interfaces = list(interfaces)
    ev.sockets.update({k: 0.0 for k in ev.sockets})
    ev.sockets.update(sockets or {})
    ev.tuning.update(DEFAULT_TUNING)
    ev.tuning.update(tuning or {})
    ev.host = host or local_host(len(ev.cpus))
    return ev


def veth(name="veth1", inbound=0.0, rx=0.0, rps="0", container=None):
    return IfaceEvidence(name=name, kind="veth", role="veth", peer="ifindex 2 (netns id 0)", container=container,
                         rx_packets=rx, inbound_drops=inbound, outbound_drops=0.0, rx_queues=1,
                         rps_masks=[rps], rps_flow_cnt=[0])


def nic(name="eth0", inbound=0.0, rx=0.0, missed=0.0, fifo=0.0, queues=1, rps="0"):
    return IfaceEvidence(name=name, kind="physical", role="physical", rx_packets=rx, inbound_drops=inbound,
                         outbound_drops=0.0, missed=missed, fifo=fifo, rx_queues=queues,
                         rps_masks=[rps] * queues, rps_flow_cnt=[0] * queues)
