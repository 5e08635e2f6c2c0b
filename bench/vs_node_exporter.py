#!/usr/bin/env python3
"""Collector CPU per collection: the netdrops external plugin against Prometheus node_exporter.

Makes a network namespace with N interfaces (veth pairs, up) and runs inside it, side by side:
- netdrops: the real external plugin process, `python3 -m netdrops_collector plugin 1` (what
  `netdrops-collector plugin 1` and Netdata's netdrops.plugin run), default configuration. One
  collection = one tick: the rtnetlink stats dump, softnet_stat, the socket counter files, the
  advisor Function's per-tick history, the plugins.d protocol text and its write to a pipe,
  which the bench reads as Netdata would.
- node_exporter with only its netdev and softnet collectors (`--collector.disable-defaults
  --collector.netdev --collector.softnet --web.disable-exporter-metrics`), on 127.0.0.1 inside
  the namespace. One collection = one scrape of /metrics over HTTP (a kept-alive connection,
  no gzip: Prometheus asks for gzip, which costs the exporter more, so this is its cheapest
  case). Its netdev collector reads the kernel with an RTM_GETLINK dump by default (`netlink`);
  the `procfs` variant (`--no-collector.netdev.netlink`) reads /proc/net/dev instead.

How it is kept apples to apples:
- The same measure for every process: whole-process CPU, utime + stime of all its threads
  from /proc/PID/stat, read before and after each round of collections. Only the measured
  process counts: not the bench's reading of the plugin's pipe, not the HTTP client. The
  kernel reports these times in 10 ms ticks, so each figure is a total over many collections
  divided by their number (the resolution is printed).
- The collections are interleaved: the plugin ticks once a second; right after each tick the
  bench scrapes every exporter once (alternating their order) and times the bare kernel reads
  in its own process, so all of them meet the same kernel conditions within the same second
  or two (the cost of a dump of 10,000 veths varies several-fold from one minute to the next).
  Where the scrapes take longer than a second (10,000 interfaces), the plugin's ticks fall
  during them and the plugin makes more collections than the exporters: each process's CPU is
  divided by its own count of collections, over the same stretch of time.
- Warm-up collections (the plugin's first tick learns every link) are not counted.
- Both read every interface. What they write differs by design: node_exporter one series per
  counter per interface; netdrops its host charts (drops summed by interface kind), with
  per-interface charts only for NICs, bridges, bonds and interfaces that drop (none here).
  `--chart-all` adds a second plugin that charts every interface (chart_interfaces: ['*']).
  The bench reads the plugins' pipes between scrapes: a tick text larger than the pipe (that
  plugin at 10,000 interfaces) waits for the bench, so that plugin makes one tick per
  collection, each still counted with its own CPU.
- Memory: VmRSS of each process after the run.

Which netdrops: the installed package (`pip install -e .`: this working tree, which may hold
someone's uncommitted changes; the first line says), or with --netdrops-ref REF the packages as
committed at REF (git archive, put first on PYTHONPATH).

The bare reads, timed in the bench process (CPU, median): what netdrops reads (RTM_GETSTATS
dump, softnet_stat, /proc/net/snmp, snmp6, netstat) and what node_exporter reads (RTM_GETLINK
dump or /proc/net/dev, and softnet_stat), none of it parsed.

node_exporter: Debian/Ubuntu `apt-get install prometheus-node-exporter` (then
`systemctl disable --now prometheus-node-exporter` if you do not want the service), or a
release binary from https://github.com/prometheus/node_exporter/releases given with
--node-exporter. Run as root (namespaces):

    sudo python3 bench/vs_node_exporter.py                      # 1,000 and 10,000 interfaces
    sudo python3 bench/vs_node_exporter.py --sizes 1000 --collections 400 --chart-all
    sudo python3 bench/vs_node_exporter.py --netdrops-ref HEAD   # the last commit, not the working tree
"""

import argparse
import http.client
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import (bare_link_dump, bare_stats_dump, delete_namespace, export_packages, make_namespace,
                      median, process_cpu_seconds, raise_on_sigterm, read_file, read_socket_files, rss_kib,
                      this_script_inside, working_tree_version, CLOCK_TICKS)

NODE_EXPORTER_NAMES = ("prometheus-node-exporter", "node_exporter")
INSTALL_HINT = ("node_exporter not found: install it with `apt-get install prometheus-node-exporter` "
                "(Debian/Ubuntu) or give a release binary with --node-exporter PATH")
# The first chart of every tick of the default job: one per tick, after the tick's work is done.
TICK_MARK = b"BEGIN netdrops_local.softnet_dropped"
# An interface's own charts: a veth gets them here only once it drops (the default config).
IFACE_CHART = re.compile(rb"^CHART netdrops_local\.iface_(\S+)_drops ", re.M)
QUIET_SECONDS = 0.03   # a tick's text is written at once; this much silence means it is all in
WARMUP = 5


# -- the processes under test ------------------------------------------------------------------

class Plugin:
    """The netdrops external plugin, run as Netdata runs it: a pipe on stdin kept open, the
    protocol read from stdout."""

    def __init__(self, name, workdir, config_text=None):
        self.name = name
        conf_dir = os.path.join(workdir, name + "-conf")
        os.makedirs(conf_dir)
        if config_text is not None:
            with open(os.path.join(conf_dir, "netdrops.conf"), "w") as f:
                f.write(config_text)
        # Config looked up only in our own directory: no /etc/netdata/netdrops.conf of this host.
        env = dict(os.environ, NETDATA_USER_CONFIG_DIR=conf_dir, NETDATA_STOCK_CONFIG_DIR=conf_dir)
        env.pop("NETDROPS_CONFIG", None)
        self.log = open(os.path.join(workdir, name + ".log"), "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "netdrops_collector", "plugin", "1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, start_new_session=True)
        self.pid = self.proc.pid
        self.partial = b""          # a line not yet complete
        self.iface_charts = set()   # interfaces the plugin made charts for

    def wait_tick(self, timeout=30):
        """Read until at least one tick's text is complete: (ticks seen, bytes read)."""
        fd = self.proc.stdout.fileno()
        ticks, nbytes = 0, 0
        deadline = time.monotonic() + timeout
        while True:
            wait = QUIET_SECONDS if ticks else deadline - time.monotonic()
            if wait <= 0:
                raise RuntimeError("{0}: no tick within {1} s".format(self.name, timeout))
            if not select.select([fd], [], [], wait)[0]:
                if ticks:
                    return ticks, nbytes
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError("{0} exited: {1}".format(self.name, self.proc.wait()))
            nbytes += len(chunk)
            data = self.partial + chunk
            cut = data.rfind(b"\n") + 1
            lines, self.partial = data[:cut], data[cut:]
            ticks += lines.count(TICK_MARK)
            self.iface_charts.update(IFACE_CHART.findall(lines))

    def stop(self):
        # EOF on stdin is Netdata saying goodbye: the plugin exits by itself.
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        stop_process(self.proc, grace=2)
        self.log.close()


class Exporter:
    """node_exporter with the netdev and softnet collectors only, on 127.0.0.1:port."""

    def __init__(self, name, binary, workdir, extra_args=()):
        self.name = name
        self.port = free_port()
        self.log = open(os.path.join(workdir, name + ".log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--collector.disable-defaults", "--collector.netdev", "--collector.softnet",
             "--web.disable-exporter-metrics", "--web.listen-address=127.0.0.1:{0}".format(self.port),
             "--log.level=warn"] + list(extra_args),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        self.pid = self.proc.pid
        self.conn = None

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("{0} exited with {1}".format(self.name, self.proc.returncode))
            try:
                return self.scrape()
            except OSError:
                self.conn = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def scrape(self):
        """One collection: GET /metrics, read it all; the body."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.request("GET", "/metrics", headers={"Accept": "text/plain", "Accept-Encoding": "identity"})
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError("{0}: HTTP {1}".format(self.name, resp.status))
        return body

    def stop(self):
        if self.conn is not None:
            self.conn.close()
        stop_process(self.proc)
        self.log.close()


def stop_process(proc, grace=0, timeout=10):
    """Wait `grace` seconds for it to exit by itself, then SIGTERM, then SIGKILL."""
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def series_per_interface(body):
    """node_exporter's scrape, read once: (interfaces, series per interface)."""
    devices = set(re.findall(rb'^node_network_receive_drop_total\{device="([^"]+)"\}', body, re.M))
    series = len(re.findall(rb'^node_network_\w+\{device="', body, re.M))
    return len(devices), (series / len(devices) if devices else 0)


# -- the bare reads ----------------------------------------------------------------------------

def bare_reads(rtnl):
    """{read: function} of the kernel reads the processes under test rely on."""
    return {
        "stats_dump": lambda: bare_stats_dump(rtnl),
        "link_dump": lambda: bare_link_dump(rtnl),
        "proc_net_dev": lambda: read_file("/proc/net/dev"),
        "softnet": lambda: read_file("/proc/net/softnet_stat"),
        "socket_files": read_socket_files,
    }


def time_each(fns, samples):
    for name, fn in fns.items():
        start = time.process_time()
        fn()
        samples.setdefault(name, []).append(time.process_time() - start)


# -- inside the namespace ----------------------------------------------------------------------

def start_processes(binary, workdir, chart_all, plugins, exporters):
    """Start everything, appending to the lists as it goes, so a failure halfway still stops
    what did start."""
    plugins.append(Plugin("netdrops", workdir))
    if chart_all:
        plugins.append(Plugin("netdrops_all", workdir, "update_every: 1\nchart_interfaces: ['*']\n"
                              "max_interface_charts: 1000000\njobs:\n  - name: local\n"))
    exporters.append(Exporter("node_exporter_netlink", binary, workdir))
    exporters.append(Exporter("node_exporter_procfs", binary, workdir, ["--no-collector.netdev.netlink"]))


def collect_once(plugins, exporters, i, fns, samples, counts):
    """One collection of everything: the plugins' tick, one scrape each, the bare reads."""
    for p in plugins:
        ticks, nbytes = p.wait_tick()
        counts[p.name] += ticks
        counts[p.name + "_bytes"] += nbytes
    for e in (exporters if i % 2 == 0 else exporters[::-1]):
        counts[e.name + "_bytes"] += len(e.scrape())
        counts[e.name] += 1
    time_each(fns, samples)


def inner(collections, rounds, binary, chart_all):
    from netdrops_collector.kernel import netlink
    workdir = tempfile.mkdtemp(prefix="netdrops-vsne-")
    plugins, exporters = [], []
    try:
        start_processes(binary, workdir, chart_all, plugins, exporters)
        procs = plugins + exporters
        first = {e.name: series_per_interface(e.wait_ready()) for e in exporters}
        rtnl = netlink.RtNetlink()
        fns = bare_reads(rtnl)
        counts = dict.fromkeys([p.name for p in procs] + [p.name + "_bytes" for p in procs], 0)
        for i in range(WARMUP):
            collect_once(plugins, exporters, i, fns, {}, counts)
        per_round = max(1, collections // rounds)
        samples, round_ms = {}, {p.name: [] for p in procs}
        totals = {p.name: [0.0, 0] for p in procs}  # CPU seconds, collections
        bytes_total = {p.name: 0 for p in procs}
        for _ in range(rounds):
            counts = dict.fromkeys(counts, 0)
            cpu_before = {p.name: process_cpu_seconds(p.pid) for p in procs}
            for i in range(per_round):
                collect_once(plugins, exporters, i, fns, samples, counts)
            for p in procs:
                cpu = process_cpu_seconds(p.pid) - cpu_before[p.name]
                totals[p.name][0] += cpu
                totals[p.name][1] += counts[p.name]
                bytes_total[p.name] += counts[p.name + "_bytes"]
                round_ms[p.name].append(cpu * 1e3 / max(1, counts[p.name]))
        result = {
            "interfaces": len(rtnl.dump_stats()),
            "per_round": per_round, "rounds": rounds,
            "processes": {p.name: {
                "cpu_ms": totals[p.name][0] * 1e3 / max(1, totals[p.name][1]),
                "collections": totals[p.name][1],
                "round_min_ms": min(round_ms[p.name]), "round_max_ms": max(round_ms[p.name]),
                "bytes": bytes_total[p.name] / max(1, totals[p.name][1]),
                "rss_kib": rss_kib(p.pid)} for p in procs},
            "bare_ms": {k: median(v) * 1e3 for k, v in samples.items()},
            "node_exporter_interfaces": {k: v[0] for k, v in first.items()},
            "node_exporter_series_per_interface": {k: v[1] for k, v in first.items()},
            "iface_charts": {p.name: len(p.iface_charts) for p in plugins},
        }
        print(json.dumps(result))
    finally:
        for p in plugins + exporters:
            p.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- outside: the namespace, and the report ----------------------------------------------------

LABELS = {
    "netdrops": "netdrops plugin",
    "netdrops_all": "netdrops plugin, every interface charted",
    "node_exporter_netlink": "node_exporter netdev(netlink)+softnet",
    "node_exporter_procfs": "node_exporter netdev(/proc/net/dev)+softnet",
}


def find_node_exporter(given):
    if given:
        return given if os.access(given, os.X_OK) else None
    for name in NODE_EXPORTER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def node_exporter_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"version (\S+)", out.stdout + out.stderr)
    return m.group(1) if m else "unknown"


def ratio(a, b):
    """a / b; nan when b measured as 0 (fewer collections than the 10 ms resolution needs)."""
    return a / b if b else float("nan")


def print_size(r, made):
    procs = r["processes"]
    base = procs["netdrops"]["cpu_ms"]
    n = procs["netdrops"]["collections"]
    bare = r["bare_ms"]
    print("{0:,} interfaces (namespace made in {1:.0f} s): {2} rounds of {3} collections, interleaved; "
          "CPU resolution 10 ms per process and round".format(r["interfaces"], made, r["rounds"], r["per_round"]))
    print("  {0:<46} {1:>10} {2:>14} {3:>11} {4:>12} {5:>11}".format(
        "process", "CPU/coll.", "round means", "x netdrops", "output/coll.", "RSS"))
    for name, p in procs.items():
        print("  {0:<46} {1:>7.2f} ms {2:>14} {3:>10.1f}x {4:>9.0f} KB {5:>7,} KiB".format(
            LABELS[name], p["cpu_ms"], "{0:.2f}-{1:.2f}".format(p["round_min_ms"], p["round_max_ms"]),
            ratio(p["cpu_ms"], base), p["bytes"] / 1e3, p["rss_kib"]))
    counts = {p["collections"] for p in procs.values()}
    print("  ({0} collections each; 10 ms / {0} = +-{1:.3f} ms per collection{2})".format(
        n, 1e3 / CLOCK_TICKS / max(1, n), "" if len(counts) == 1 else "; counts differ: " + ", ".join(
            "{0} {1}".format(k, p["collections"]) for k, p in procs.items())))
    netdrops_bare = bare["stats_dump"] + bare["softnet"] + bare["socket_files"]
    print("  bare reads (bench process CPU, median):")
    print("    {0:<24} RTM_GETSTATS dump {1:.3f} + softnet_stat {2:.3f} + snmp/snmp6/netstat {3:.3f} "
          "= {4:.3f} ms; tick / bare reads {5:.2f}x".format(
              "netdrops:", bare["stats_dump"], bare["softnet"], bare["socket_files"], netdrops_bare, ratio(base, netdrops_bare)))
    for name, read, label in (("node_exporter_netlink", "link_dump", "RTM_GETLINK dump"),
                              ("node_exporter_procfs", "proc_net_dev", "/proc/net/dev")):
        total = bare[read] + bare["softnet"]
        print("    {0:<24} {1} {2:.3f} + softnet_stat {3:.3f} = {4:.3f} ms; scrape / bare reads {5:.2f}x".format(
            name.replace("_netlink", " (netlink):").replace("_procfs", " (procfs):"), label, bare[read],
            bare["softnet"], total, ratio(procs[name]["cpu_ms"], total)))
    ifaces = r["node_exporter_interfaces"]["node_exporter_netlink"]
    series = r["node_exporter_series_per_interface"]["node_exporter_netlink"]
    print("  node_exporter exports {0:,} interfaces (lo excluded by default), {1:.0f} series each; the netdrops "
          "plugin charted {2:,} interfaces (those that dropped after it started)".format(
              ifaces, series, r["iface_charts"]["netdrops"]))
    print()


def print_summary(results):
    print("summary: CPU per collection (ms), ratio to netdrops, RSS after the run")
    print("| interfaces | netdrops | node_exporter (netlink) | node_exporter (/proc/net/dev) | netdrops bare reads "
          "| RSS netdrops | RSS node_exporter (netlink / procfs) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        p = r["processes"]
        base = p["netdrops"]["cpu_ms"]
        bare = r["bare_ms"]
        print("| {0:,} | {1:.2f} | {2:.2f} ({3:.1f}x) | {4:.2f} ({5:.1f}x) | {6:.3f} | {7:,} KiB | {8:,} / {9:,} KiB |".format(
            r["interfaces"], base, p["node_exporter_netlink"]["cpu_ms"], ratio(p["node_exporter_netlink"]["cpu_ms"], base),
            p["node_exporter_procfs"]["cpu_ms"], ratio(p["node_exporter_procfs"]["cpu_ms"], base),
            bare["stats_dump"] + bare["softnet"] + bare["socket_files"], p["netdrops"]["rss_kib"],
            p["node_exporter_netlink"]["rss_kib"], p["node_exporter_procfs"]["rss_kib"]))
        if "netdrops_all" in p:
            print("|   (every interface charted) | {0:.2f} | {1:.1f}x of it | {2:.1f}x of it | | {3:,} KiB | |".format(
                p["netdrops_all"]["cpu_ms"], ratio(p["node_exporter_netlink"]["cpu_ms"], p["netdrops_all"]["cpu_ms"]),
                ratio(p["node_exporter_procfs"]["cpu_ms"], p["netdrops_all"]["cpu_ms"]), p["netdrops_all"]["rss_kib"]))


def run_size(size, args, binary):
    ns = "ndvsne{0}".format(os.getpid())
    start = time.monotonic()
    make_namespace(ns, size)
    made = time.monotonic() - start
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)  # exporters listen on 127.0.0.1
        inner_args = ["--collections", str(args.collections), "--rounds", str(args.rounds),
                      "--node-exporter", binary] + (["--chart-all"] if args.chart_all else [])
        out = this_script_inside(ns, __file__, inner_args)
    finally:
        delete_namespace(ns)
    return json.loads(out.strip().splitlines()[-1]), made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="interfaces (veths) per run")
    parser.add_argument("--collections", type=int, default=200,
                        help="scrapes counted per exporter and size, one a second or slower (default 200)")
    parser.add_argument("--rounds", type=int, default=4, help="CPU is read at the end of each round (default 4)")
    parser.add_argument("--node-exporter", metavar="PATH", help="node_exporter binary (default: found on PATH)")
    parser.add_argument("--chart-all", action="store_true",
                        help="also run a plugin that charts every interface")
    parser.add_argument("--netdrops-ref", metavar="REF",
                        help="measure netdrops as committed at this git ref (default: the installed package)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    binary = find_node_exporter(args.node_exporter)
    if binary is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    if args.inner:
        raise_on_sigterm()
        return inner(args.collections, args.rounds, binary, args.chart_all)
    if os.geteuid() != 0:
        print("run as root: the bench makes network namespaces", file=sys.stderr)
        return 2
    raise_on_sigterm()
    print("machine: {0} CPUs, {1}, Python {2}, node_exporter {3} ({4})".format(
        os.cpu_count(), os.uname().release, sys.version.split()[0], node_exporter_version(binary), binary))
    exported = tempfile.mkdtemp(prefix="netdrops-ref-") if args.netdrops_ref else None
    try:
        if exported:
            commit = export_packages(args.netdrops_ref, exported)
            os.environ["PYTHONPATH"] = exported  # the bench's inner half and the plugins it starts
            print("netdrops: git {0} ({1}), exported".format(commit[:12], args.netdrops_ref))
        else:
            print("netdrops: installed package, {0}".format(working_tree_version()))
        results = []
        for size in args.sizes:
            result, made = run_size(size, args, binary)
            print_size(result, made)
            results.append(result)
    finally:
        if exported:
            shutil.rmtree(exported, ignore_errors=True)
    print_summary(results)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the clean-up has run on the way out
        print("interrupted: the namespace and everything started in it are removed", file=sys.stderr)
        sys.exit(130)
