#!/usr/bin/env python3
"""Advisor wall time to a diagnosis from a Netdata holding 1,000 interfaces.

Makes a network namespace with N interfaces (veth pairs, up; `lo` up too) and, inside it,
starts a real Netdata (Debian's 1.37, through the tests' harness tests/netdatad.py: its own
directories, a free loopback port, stock external plugins off, the internal proc plugin on), so
its /proc/net/dev module and the netdrops plugin see every interface of the namespace:

1. netdrops: the external plugin installed with `netdrops-collector install --mode plugin`
   (alarms included), configured to chart every veth (`chart_interfaces: ['nb*']`,
   `max_interface_charts` raised above N). Once Netdata holds a netdrops chart for every veth,
   the bench waits for --history seconds of data (default 60: the advisor's default window is
   full), then runs `netdrops-advisor --url http://127.0.0.1:PORT` inside the namespace --runs
   times and prints the median and the maximum wall time, from the command's start to its exit
   (interpreter start included, as a user sees it; the pip console script is run directly, not
   through a pyenv shim).
2. stock: the same without netdrops (Netdata's own charts only: the advisor falls back to them).

Then, for each, one `--json` run tells the evidence it used (source, interfaces, the number of
API requests it counts itself), and one run inside this process, with the client's get_bytes
wrapped, counts the bytes of the API answers and the wall time spent waiting for them. When
the median is over --target seconds (or with --profile), a cProfile of one run in this process
says where the time goes. Netdata and the namespace are removed at the end, also on Ctrl-C.

    sudo python3 bench/advisor_walltime.py                 # 1,000 interfaces, 10 runs each
    sudo python3 bench/advisor_walltime.py --interfaces 2000 --runs 20 --history 30 --profile
"""

import argparse
import cProfile
import contextlib
import io
import json
import os
import pstats
import subprocess
import sys
import sysconfig
import time

from benchlib import (delete_namespace, make_namespace, median, raise_on_sigterm, this_script_inside,
                      working_tree_version)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
NETDROPS_CONF = """\
update_every: 1
jobs:
  - name: local
    chart_interfaces: ['nb*']
    max_interface_charts: {max_charts}
"""
IFACE_CONTEXT = "netdrops.iface_drops"
DIAGNOSIS_STARTS = ("Problem ", "No receive-path", "Note: ")  # how advisor/render.py starts one


def advisor_command():
    """The console script pip installed for this interpreter, else `python -m netdrops_advisor`."""
    script = os.path.join(sysconfig.get_path("scripts"), "netdrops-advisor")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "netdrops_advisor"]


# -- the Netdata under test --------------------------------------------------------------------

def start_netdata(factory, mode, n_veths):
    """A started Netdata named after mode ('netdrops' or 'stock')."""
    nd = factory(mode)
    if mode == "netdrops":
        nd.write_config_file("netdrops.conf", NETDROPS_CONF.format(max_charts=2 * n_veths))
        nd.install_netdrops("plugin")
    return nd.start()


def contexts_count(nd, context):
    return sum(1 for c in nd.charts().values() if c.get("context") == context)


def wait_for_charts(nd, mode, n_veths, timeout):
    """Wait until Netdata holds a chart for every veth: netdrops' own, or the stock net.net."""
    context = IFACE_CONTEXT if mode == "netdrops" else "net.net"
    nd.wait_for(lambda: contexts_count(nd, context) >= n_veths, timeout=timeout, interval=2,
                what="{0} charts of {1}".format(n_veths, context))
    if mode == "stock":
        nd.wait_chart("cpu.softnet_stat", timeout=timeout)


# -- running the advisor -----------------------------------------------------------------------

def timed_runs(url, runs):
    """Wall seconds of each `netdrops-advisor --url URL` run, the exit codes seen, and the
    first line of the last run's diagnosis (after the header and the evidence sentence)."""
    times, codes, headline = [], set(), ""
    for _ in range(runs):
        start = time.monotonic()
        done = subprocess.run(advisor_command() + ["--url", url], capture_output=True, text=True)
        times.append(time.monotonic() - start)
        codes.add(done.returncode)
        if done.returncode not in (0, 1):  # 2: the advisor could not do its job
            raise RuntimeError("netdrops-advisor exited {0}: {1}".format(done.returncode, done.stderr.strip()))
        headline = next((line for line in done.stdout.splitlines() if line.startswith(DIAGNOSIS_STARTS)), "")
    return times, sorted(codes), headline


def json_report(url):
    done = subprocess.run(advisor_command() + ["--url", url, "--json"], capture_output=True, text=True)
    doc = json.loads(done.stdout)
    source = doc.get("source") or {}
    return {"status": doc.get("status"), "source": source.get("kind"), "requests": source.get("requests"),
            "window_s": (doc.get("window") or {}).get("seconds"),
            "interfaces": len((doc.get("evidence") or {}).get("interfaces") or [])}


@contextlib.contextmanager
def counting_api():
    """Count bytes and waiting time of every Netdata answer the advisor reads in this process."""
    from netdrops_advisor.sources.netdata_api import NetdataClient
    tally = {"requests": 0, "bytes": 0, "wait_s": 0.0}
    original = NetdataClient.get_bytes

    def get_bytes(self, path, params=None):
        start = time.monotonic()
        body = original(self, path, params)
        tally["wait_s"] += time.monotonic() - start
        tally["requests"] += 1
        tally["bytes"] += len(body)
        return body

    NetdataClient.get_bytes = get_bytes
    try:
        yield tally
    finally:
        NetdataClient.get_bytes = original


def run_in_process(url, profiler=None):
    """One advisor run in this process: (wall seconds, exit code)."""
    from netdrops_advisor import cli
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if profiler is not None:
            code = profiler.runcall(cli.main, ["--url", url])
        else:
            code = cli.main(["--url", url])
    return time.monotonic() - start, code


def profile_text(url, top=25):
    """The functions that took the most time in one run, by cumulative time."""
    profiler = cProfile.Profile()
    wall, _ = run_in_process(url, profiler)
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
    lines = ["    cProfile of one run in this process ({0:.3f} s wall, profiler overhead included), "
             "by cumulative time:".format(wall),
             "    {0:>8} {1:>8} {2:>8}  function".format("cum s", "own s", "calls")]
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in rows:
        where = "{0}:{1}".format(os.path.relpath(path, REPO) if path.startswith(REPO) else os.path.basename(path), line)
        lines.append("    {0:>8.3f} {1:>8.3f} {2:>8}  {3} ({4})".format(cumtime, tottime, ncalls, func, where))
    return "\n".join(lines)


def examine(nd, mode, n_veths, args):
    """Everything measured against one Netdata, as a dict."""
    t0 = time.monotonic()
    wait_for_charts(nd, mode, n_veths, args.chart_timeout)
    charts_after = time.monotonic() - t0
    time.sleep(args.history)  # every chart now has this much data
    times, codes, headline = timed_runs(nd.url, args.runs)
    result = {"mode": mode, "charts_after_s": charts_after, "charts": len(nd.charts()),
              "own_charts": contexts_count(nd, IFACE_CONTEXT if mode == "netdrops" else "net.net"),
              "version": nd.api("/api/v1/info")["version"], "times": times, "exit_codes": codes, "headline": headline,
              "report": json_report(nd.url)}
    with counting_api() as tally:
        result["in_process_s"], _ = run_in_process(nd.url)
    result["api"] = tally
    if args.profile or median(times) > args.target:
        result["profile"] = profile_text(nd.url)
    return result


def inner(args):
    sys.path.insert(0, TESTS)
    from netdatad import NetdataFactory
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    n_veths = args.interfaces // 2 * 2
    factory = NetdataFactory()
    results = []
    try:
        for mode in ("netdrops", "stock"):
            nd = start_netdata(factory, mode, n_veths)
            try:
                results.append(examine(nd, mode, n_veths, args))
            finally:
                nd.stop()
    finally:
        factory.close()
    print(json.dumps(results))


# -- outside: the namespace and the report -----------------------------------------------------

def print_result(r, args):
    rep, api = r["report"], r["api"]
    what = ("netdrops plugin charting every veth" if r["mode"] == "netdrops"
            else "no netdrops (Netdata's own charts only)")
    print("Netdata {0}, {1}: {2:,} charts ({3:,} {4} charts), all there {5:.0f} s after start, then {6} s of history".format(
        r["version"], what, r["charts"], r["own_charts"],
        IFACE_CONTEXT if r["mode"] == "netdrops" else "net.net", r["charts_after_s"], args.history))
    t = r["times"]
    print("  netdrops-advisor --url URL: {0} runs, wall median {1:.3f} s, max {2:.3f} s, min {3:.3f} s "
          "(target < {4:g} s: {5}); exit status {6}".format(
              len(t), median(t), max(t), min(t), args.target, "met" if median(t) < args.target else "MISSED",
              "/".join(str(c) for c in r["exit_codes"])))
    print("  diagnosis: {0}".format(r["headline"].strip()))
    print("  --json: status {0}, source {1}, {2} interfaces in the evidence, window {3} s, {4} API requests".format(
        rep["status"], rep["source"], rep["interfaces"], rep["window_s"], rep["requests"]))
    print("  in this process (no interpreter start): {0:.3f} s wall, {1} API requests, {2:,} bytes of answers, "
          "{3:.3f} s waiting for them".format(r["in_process_s"], api["requests"], api["bytes"], api["wait_s"]))
    if "profile" in r:
        print(r["profile"])
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interfaces", type=int, default=1000, help="interfaces (veths) in the namespace (default 1000)")
    parser.add_argument("--runs", type=int, default=10, help="advisor runs per Netdata (default 10)")
    parser.add_argument("--history", type=int, default=60,
                        help="seconds of data to wait for once every chart exists (default 60)")
    parser.add_argument("--target", type=float, default=1.0, help="wall-time target in seconds (default 1)")
    parser.add_argument("--profile", action="store_true", help="profile one run even when the target is met")
    parser.add_argument("--chart-timeout", type=int, default=180, help=argparse.SUPPRESS)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        raise_on_sigterm()
        return inner(args)
    if os.geteuid() != 0:
        print("run as root: the bench makes a network namespace and starts Netdata", file=sys.stderr)
        return 2
    raise_on_sigterm()
    ns = "ndadv{0}".format(os.getpid())
    print("machine: {0} CPUs, {1}, Python {2}".format(os.cpu_count(), os.uname().release, sys.version.split()[0]))
    print("netdrops: installed package (advisor) and `netdrops-collector install` (plugin), {0}".format(
        working_tree_version()))
    start = time.monotonic()
    # IPv6 stays on: its link-local chatter is the traffic that makes Netdata's own proc plugin
    # chart an interface (it charts none that never counted a byte).
    make_namespace(ns, args.interfaces, ipv6=True)
    print("namespace with {0:,} interfaces + lo made in {1:.0f} s".format(args.interfaces // 2 * 2, time.monotonic() - start))
    try:
        passed = ["--interfaces", str(args.interfaces), "--runs", str(args.runs), "--history", str(args.history),
                  "--target", str(args.target), "--chart-timeout", str(args.chart_timeout)]
        out = this_script_inside(ns, __file__, passed + (["--profile"] if args.profile else []))
    finally:
        delete_namespace(ns)
    for r in json.loads(out.strip().splitlines()[-1]):
        print_result(r, args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the clean-up has run on the way out
        print("interrupted: the namespace and everything started in it are removed", file=sys.stderr)
        sys.exit(130)
