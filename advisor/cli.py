"""netdrops-advisor: are packets being dropped on the receive path, where, why, and what
should change.

Exit status: 0 healthy, 1 problems found, 2 the advisor could not do its job (one sentence on
stderr, never a traceback; --debug shows one for a bug).
"""

import argparse
import os
import sys
import traceback

from netdrops_collector.kernel.hostfs import HostFS

from . import __version__, render
from .apply import apply_cli
from .sources import gather
from .errors import AdvisorError
from .examine import KERNEL_WINDOW, NETDATA_WINDOW, examine
from .sources.netdata_api import DEFAULT_URL, TOKEN_ENV, NetdataClient, check_token, normalize_url
from .report import ERROR, HEALTHY, PROBLEMS, build_report, error_report

MAX_WINDOW = 86400

EPILOG = """\
evidence, in order (--source auto):
  1. the Netdata at --url (default {url}): its netdrops.* charts, or else Netdata's own
     softnet_stat, net.drops, net.packets and UDP charts;
  2. with no usable Netdata on this machine (and no --url/--node given), the kernel itself,
     sampled for --window seconds (default {kw}).

through a Netdata parent: --node NAME reads one child (/host/NAME/api/v1/...); --all-nodes
prints one line per node the parent holds, worst first.

a Netdata v2 with bearer token protection on refuses anonymous calls: put the token in the
environment variable {env} (--token also works, but shows in ps to every user).

exit status: 0 healthy, 1 problems found, 2 the advisor could not do its job.
""".format(url=DEFAULT_URL, kw=KERNEL_WINDOW, env=TOKEN_ENV)


def positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: {0!r}".format(text))
    if not 0 < value <= MAX_WINDOW:
        raise argparse.ArgumentTypeError("must be more than 0 and at most {0}".format(MAX_WINDOW))
    return value


def url_argument(text):
    try:
        return normalize_url(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err))


def token_argument(text):
    try:
        return check_token(text)
    except ValueError as err:   # the message never repeats the token
        raise argparse.ArgumentTypeError(str(err))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="netdrops-advisor",
        description="Diagnose packet drops in the Linux receive path and recommend what to change.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", type=url_argument, metavar="URL",
                        help="Netdata to read (default {0})".format(DEFAULT_URL))
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument("--node", metavar="NAME", help="read this child node through the Netdata parent at --url")
    nodes.add_argument("--all-nodes", action="store_true",
                       help="examine every node the Netdata parent holds, one line each, worst first")
    parser.add_argument("--window", type=positive_seconds, metavar="SECONDS",
                        help="how much recent history to examine (default {0} s from Netdata; {1} s of "
                             "sampling from the kernel)".format(NETDATA_WINDOW, KERNEL_WINDOW))
    parser.add_argument("--source", choices=("auto", "netdata", "kernel"), default="auto",
                        help="where the evidence comes from (default auto: Netdata, else the kernel)")
    parser.add_argument("--token", type=token_argument, metavar="TOKEN",
                        help="bearer token for a Netdata that refuses anonymous calls (default: the "
                             "environment variable {0}, which ps does not show)".format(TOKEN_ENV))
    parser.add_argument("--timeout", type=positive_seconds, default=5.0, metavar="SECONDS",
                        help="how long to wait for each Netdata answer (default 5)")
    parser.add_argument("--host-prefix", metavar="DIR",
                        help="read /proc and /sys under DIR (the host's, mounted into a container)")
    parser.add_argument("--json", action="store_true", help="print the documented JSON report (schema netdrops-advisor/1)")
    parser.add_argument("--debug", action="store_true", help="show a traceback if the advisor itself fails")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    apply_cli.add_arguments(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.token is None and os.environ.get(TOKEN_ENV):
        try:
            args.token = check_token(os.environ[TOKEN_ENV])
        except ValueError as err:
            parser.error("{0}: {1}".format(TOKEN_ENV, err))
    remote = args.url is not None or args.node is not None or args.all_nodes
    if args.source == "kernel" and remote:
        parser.error("--source kernel reads this machine; it cannot be combined with --url, --node or --all-nodes")
    try:
        if apply_cli.handles(args, parser):   # --apply, --dry-run, --verify, --rollback
            return apply_cli.main(args, parser)
        if args.all_nodes:
            return run_all_nodes(args)
        return run_one(args, remote)
    except KeyboardInterrupt:
        print("netdrops-advisor: interrupted.", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one sentence, unless asked for the traceback
        if args.debug:
            traceback.print_exc()
        print("netdrops-advisor: internal error ({0}: {1}); run with --debug for details.".format(
            type(err).__name__, err), file=sys.stderr)
        return 2


def _hostfs(args):
    return HostFS.from_env(args.host_prefix)


def run_one(args, remote):
    report = examine(args, args.url or DEFAULT_URL, args.source in ("auto", "netdata"), remote, _hostfs(args))
    emit(args, report)
    return report.exit_code


def run_all_nodes(args):
    url = args.url or DEFAULT_URL
    client = NetdataClient(url, args.timeout, token=args.token)
    window = args.window or NETDATA_WINDOW
    try:
        info = client.info()
    except AdvisorError as err:
        if args.json:
            sys.stdout.write(render.to_json(render.fleet_to_dict(client.base_url, [], ERROR, 2, str(err))))
        print("netdrops-advisor: {0}".format(err), file=sys.stderr)
        return 2
    reports = []
    for host in info.mirrored_hosts:
        try:
            evidence = gather.from_netdata(client.for_node(host.hostname), window, hostfs=_hostfs(args))
            reports.append(build_report(evidence))
        except AdvisorError as err:
            reports.append(error_report(str(err), node=host.hostname))
    reports.sort(key=render.status_rank)
    statuses = {r.status for r in reports}
    if PROBLEMS in statuses:
        status = PROBLEMS
    elif ERROR in statuses or not reports:
        status = ERROR
    else:
        status = HEALTHY
    code = {HEALTHY: 0, PROBLEMS: 1, ERROR: 2}[status]
    if args.json:
        sys.stdout.write(render.to_json(render.fleet_to_dict(client.base_url, reports, status, code)))
    else:
        sys.stdout.write(render.render_fleet_text(client.base_url, info.version, reports, window))
    return code


def emit(args, report):
    if args.json:
        sys.stdout.write(render.to_json(render.report_to_dict(report)))
        if report.status == ERROR:
            print("netdrops-advisor: {0}".format(report.error), file=sys.stderr)
        return
    if report.status == ERROR:
        sys.stderr.write(render.render_text(report))
    else:
        sys.stdout.write(render.render_text(report))


if __name__ == "__main__":
    sys.exit(main())
