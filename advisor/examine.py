"""Examining one node, as a plain run and --apply both do: the Netdata at the URL (netdrops
charts, else Netdata's own), else this machine's kernel sampled for a window. cli.py and
apply_cli.py both call it, so neither imports the other for it."""

from netdrops_collector.kernel import tracefs

from .sources import gather
from .errors import AdvisorError, MissingEvidence, NetdataError
from .sources.netdata_api import NetdataClient
from .report import build_report, error_report

NETDATA_WINDOW = 60   # Netdata keeps history: a minute costs no waiting
KERNEL_WINDOW = 10    # sampling the kernel waits this long


def read_netdata(args, url, hostfs):
    """Evidence of one node (--node NAME through a parent, else the agent at url)."""
    client = NetdataClient(url, args.timeout, token=args.token)
    window = args.window or NETDATA_WINDOW
    if args.node:
        gather.check_node(client.info(), args.node, client.base_url)
        node_client = client.for_node(args.node)
        evidence = gather.from_netdata(node_client, window, hostfs=hostfs)
        evidence.requests += client.requests
        return evidence
    return gather.from_netdata(client, window, hostfs=hostfs)


def examine(args, url, use_netdata, remote, hostfs):
    """The Report of one node; an AdvisorError becomes an error report. Netdata first when
    use_netdata; without a usable one the kernel is sampled instead (the report says why),
    unless Netdata was asked for (--source netdata) or the node is another machine (remote)."""
    report = fallback = None
    # Drop reasons need tracefs while the counters are opened and samples taken: as root on this
    # machine (its kernel, or a Netdata on loopback), the advisor mounts it for the run when it
    # is missing, and unmounts it after.
    with tracefs.MountedForNow(wanted=not use_netdata or gather.is_loopback_url(url)) as mount:
        try:
            if use_netdata:
                try:
                    report = build_report(with_note(read_netdata(args, url, hostfs), mount.note))
                except (NetdataError, MissingEvidence) as err:
                    if args.source == "netdata" or remote:
                        raise
                    fallback = str(err)
            if report is None:
                evidence = gather.from_kernel(args.window or KERNEL_WINDOW, hostfs=hostfs)
                report = build_report(with_note(evidence, mount.note), fallback_reason=fallback)
        except AdvisorError as err:
            report = error_report(str(err), node=args.node)
    return report


def with_note(evidence, note):
    if note:
        evidence.notes.append(note)
    return evidence
