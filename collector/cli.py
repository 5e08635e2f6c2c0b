"""netdrops-collector: install into Netdata, uninstall, run the external plugin, serve OpenMetrics, or\nrun the root helper that hands out the drop-reason counters."""

import argparse
import logging
import sys

from . import __version__


DIR_OPTIONS = ("plugins_dir", "pythond_dir", "config_dir", "lib_dir", "units_dir")


def add_dir_options(parser):
    """Explicit directories, for a Netdata laid out in an unusual way (or a test instance)."""
    parser.add_argument("--plugins-dir", metavar="DIR", help="Netdata's plugins.d directory")
    parser.add_argument("--pythond-dir", metavar="DIR", help="directory python.d.plugin loads modules from")
    parser.add_argument("--config-dir", metavar="DIR", help="Netdata's user configuration directory")
    parser.add_argument("--lib-dir", metavar="DIR", help="where the collector package is copied")
    parser.add_argument("--units-dir", metavar="DIR",
                        help="where the drop-reasons helper's systemd units go (default: /etc/systemd/system under "
                             "--netdata's root; with --plugins-dir, LIB/systemd); only in this host's "
                             "/etc/systemd/system does install enable them")


def add_docker_option(parser):
    parser.add_argument("--docker", action="store_true",
                        help="the official netdata/netdata image: everything under its /etc/netdata volume, "
                             "whose host directory --config-dir names (default /etc/netdata)")


def dirs_of(args):
    return {k: getattr(args, k) for k in DIR_OPTIONS}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netdrops-collector",
        description="Netdata collector for receive-path packet drops: install it into Netdata, "
                    "remove it, or run the external plugin.")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_install = sub.add_parser("install", help="install the collector, its configuration and alarms into Netdata")
    p_install.add_argument("--netdata", metavar="DIR",
                           help="Netdata installation root to use (default: detect /, /opt/netdata)")
    p_install.add_argument("--mode", choices=("auto", "python.d", "plugin", "openmetrics"), default="auto",
                           help="python.d module or external plugin (auto: python.d where Netdata has it, "
                                "the plugin with --docker); openmetrics: only the alarms for go.d's "
                                "prometheus job of `netdrops-collector openmetrics`, and the job to add")
    p_install.add_argument("--no-health", action="store_true", help="do not install the alarms")
    p_install.add_argument("--netdata-version", metavar="X.Y",
                           help="the Netdata version the alarms are for (default: asked from the netdata binary)")
    p_install.add_argument("--dry-run", action="store_true", help="print what would be written, change nothing")
    add_docker_option(p_install)
    add_dir_options(p_install)

    p_uninstall = sub.add_parser("uninstall", help="remove exactly what install put there")
    p_uninstall.add_argument("--netdata", metavar="DIR", help="Netdata installation root")
    p_uninstall.add_argument("--dry-run", action="store_true", help="print what would be removed")
    add_docker_option(p_uninstall)
    add_dir_options(p_uninstall)

    p_plugin = sub.add_parser("plugin", help="run the external plugin, writing Netdata's protocol to stdout")
    p_plugin.add_argument("update_every", nargs="?", help="seconds between collections")

    p_om = sub.add_parser("openmetrics", help="serve the charts as Prometheus/OpenMetrics metrics over HTTP")
    p_om.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:9477",
                      help="address to serve /metrics on (default 127.0.0.1:9477, loopback only)")
    p_om.add_argument("--update-every", type=int, metavar="SECONDS",
                      help="seconds between collections (default: netdrops.conf's update_every, else 1)")

    p_helper = sub.add_parser("reasons-helper", help="as root: open the kernel's drop-reason counters and pass "
                              "them to the collector (socket-activated by netdrops-reasons.socket, or --listen)")
    from .reasons_helper import add_arguments as add_helper_arguments
    add_helper_arguments(p_helper)

    args = parser.parse_args(argv)
    if args.command == "reasons-helper":
        from .reasons_helper import run as helper_run
        return helper_run(args)
    if args.command == "plugin":
        from .frontends.functions import PROVIDER_GROUP, installed_providers
        from .frontends.plugin import main as plugin_main
        providers = installed_providers()
        if not providers:  # e.g. a source install whose metadata predates the group: pip install -e . again
            print("netdrops-collector: no Netdata Function is installed (entry point group {0}): "
                  "the plugin offers none".format(PROVIDER_GROUP), file=sys.stderr)
        return plugin_main([args.update_every] if args.update_every else [], providers=providers)
    if args.command == "openmetrics":
        from .frontends.openmetrics_server import main as openmetrics_main
        return openmetrics_main(args.listen, args.update_every)
    if args.command in ("install", "uninstall"):
        from . import install
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        try:
            if args.command == "install":
                return install.install(args.netdata, args.mode, not args.no_health, args.dry_run,
                                       args.netdata_version, args.docker, **dirs_of(args))
            return install.uninstall(args.netdata, args.dry_run, args.docker, **dirs_of(args))
        except (install.InstallError, OSError) as error:
            print("netdrops-collector: {0}".format(error), file=sys.stderr)
            return 2
    parser.print_help()
    return 2
