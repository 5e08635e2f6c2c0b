"""The command line of --apply, --dry-run, --verify and --rollback (cli.py hands over here).

Exit status, as the advisor's: 0 done (or nothing to do), 1 problems remain (--verify failed,
--dry-run has changes to show, the change was declined), 2 refused or failed (one sentence on
stderr; whatever had been changed is restored).
"""

import json
import os
import shlex
import socket
import sys

from . import persist, verify
from .. import render
from .plan import ApplyError, build_plan, execute, finish, pending, render_diff
from ..examine import examine
from ..sources.gather import is_loopback_url
from ..sources.netdata_api import DEFAULT_URL
from .persist import PersistError
from ..diagnose.recommend import Recommendation
from .settings import Paths, SettingError
from .snapshot import APPLYING, StateDir, StateError, rollback

VERIFY_WINDOW = 10.0
REPORT_SCHEMA = "netdrops-advisor/1"


def add_arguments(parser):
    group = parser.add_argument_group(
        "changing this machine",
        "Only this machine, as root, and only the net.core sysctls and RPS/RFS files netdrops recommends. "
        "The originals are saved in /var/lib/netdrops/apply before the first change; a failed write "
        "undoes the others.")
    group.add_argument("--apply", action="store_true",
                       help="make the recommended changes now and keep them across reboots "
                            "(/etc/sysctl.d/90-netdrops.conf; RPS by net.core.rps_default_mask or a udev rule)")
    group.add_argument("--dry-run", action="store_true", help="show what --apply would change, as a diff; change nothing")
    group.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    group.add_argument("--verify", action="store_true",
                       help="measure the drop rates after the change and print the success table "
                            "(with --apply: right after it; alone: against the last --apply)")
    group.add_argument("--rollback", action="store_true",
                       help="restore every value and file --apply changed, removing the files it created")
    group.add_argument("--root", metavar="DIR",
                       help="work on a tree under DIR: /etc, /var/lib and (unless --host-prefix says "
                            "otherwise) /proc/sys and /sys (tests, preparing an image)")
    group.add_argument("--report", metavar="FILE",
                       help="with --apply/--dry-run: take the recommendations of a saved --json report of "
                            "this machine instead of examining it again")


def handles(args, parser):
    """True when the command is one of ours; parser.error for combinations that make no sense."""
    actions = [f for f in ("apply", "dry_run", "verify", "rollback") if getattr(args, f)]
    if not actions:
        for flag in ("yes", "root", "report"):
            if getattr(args, flag):
                parser.error("--{0} goes with --apply, --dry-run, --verify or --rollback".format(flag))
        return False
    if args.json:
        parser.error("--json is not available with --apply, --dry-run, --verify or --rollback")
    if args.all_nodes:
        parser.error("--all-nodes examines a fleet; --apply and friends change only the machine they run on")
    if args.rollback and len(actions) > 1:
        parser.error("--rollback cannot be combined with --apply, --dry-run or --verify")
    changing = args.apply or args.dry_run
    if not changing and (args.url or args.node or args.report):
        parser.error("--{0} works on this machine's record of the last --apply; it takes no --url, --node "
                     "or --report".format(actions[0].replace("_", "-")))
    if args.report and (args.url or args.node or args.source != "auto"):
        parser.error("--report takes its recommendations from the file; do not combine it with --url, --node or --source")
    return True


def main(args, parser):
    args.given_host_prefix = args.host_prefix
    try:
        paths = resolve_paths(args)
        if args.rollback:
            return do_rollback(args, paths)
        if not (args.apply or args.dry_run):
            return do_verify(args, paths)
        return do_apply(args, paths)
    except (ApplyError, StateError, SettingError, PersistError) as err:
        say(str(err))
        return 2


def say(sentence):
    print("netdrops-advisor: {0}".format(sentence), file=sys.stderr)


def resolve_paths(args):
    if args.root:
        if not os.path.isdir(args.root):
            raise ApplyError("--root {0}: no such directory.".format(args.root))
        return Paths.make(args.root, args.host_prefix)
    prefix = args.host_prefix if args.host_prefix is not None else os.environ.get("NETDATA_HOST_PREFIX", "")
    paths = Paths.make(None, prefix)
    if not paths.real_kernel and (args.apply or args.rollback) and not args.dry_run:
        raise ApplyError("--apply and --rollback change this machine's own /proc/sys and /sys, not those under a "
                         "host prefix ({0}): run them on the host itself (or give --root DIR for a tree).".format(
                             paths.hostfs.prefix))
    return paths


def need_root(flag):
    if os.geteuid() != 0:
        raise ApplyError("{0} changes kernel settings and files under /etc and /var/lib, so it must run as root "
                         "(try: sudo netdrops-advisor {0}).".format(flag))


def again(args, flag):
    """The command line to run next, with the same --root/--host-prefix."""
    words = ["netdrops-advisor", flag]
    if args.root:
        words += ["--root", args.root]
    given = getattr(args, "given_host_prefix", args.host_prefix)
    if given is not None and args.root:
        words += ["--host-prefix", given]
    return " ".join(shlex.quote(w) for w in words)


def confirm(args, question):
    """--yes, or a 'y' typed at a terminal; refuses when nobody can be asked."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ApplyError("{0} asks before changing anything and stdin is not a terminal: add --yes to go ahead "
                         "without asking. Nothing was changed.".format("--rollback" if args.rollback else "--apply"))
    try:
        answer = input(question + " [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


# -- where the recommendations come from -------------------------------------------------------

class Source:
    """Recommendations plus what --apply must know about where they came from."""

    def __init__(self, recs, metrics, node, local, in_container, text, exit_code, error=None, url=None, window=None):
        self.recs, self.metrics, self.node, self.local = recs, metrics, node, local
        self.in_container, self.text, self.exit_code, self.error = in_container, text, exit_code, error
        self.url, self.window = url, window
        self.from_file = False


def from_report(report):
    ev = report.evidence
    if report.error is not None:
        return Source([], [], report.node, False, False, None, 2, error=report.error)
    return Source(report.recommendations, verify.metrics_from_report(report), ev.node, ev.host.local,
                  ev.host.in_container, render.render_text(report), report.exit_code, url=ev.url,
                  window=ev.window_seconds)


def gather_report(args, paths, remote):
    """Examine the machine as the advisor does, reading /proc and /sys where --apply writes.
    A tree under --root is examined through the kernel sampler (a local Netdata describes the
    real machine, not the tree) unless --url/--source netdata say otherwise."""
    args.host_prefix = paths.hostfs.prefix
    use_netdata = args.source == "netdata" or (args.source == "auto" and (
        remote or args.url is not None or paths.real_kernel))
    return from_report(examine(args, args.url or DEFAULT_URL, use_netdata, remote, paths.hostfs))


def load_report(path):
    """A saved `--json` report -> Source."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as err:
        raise ApplyError("Could not read the report {0}: {1}.".format(path, err.strerror))
    except ValueError as err:
        raise ApplyError("The report {0} is not JSON ({1}).".format(path, err))
    if not isinstance(doc, dict) or doc.get("schema") != REPORT_SCHEMA or "recommendations" not in doc:
        raise ApplyError("{0} is not a single-node `netdrops-advisor --json` report (schema {1}).".format(path, REPORT_SCHEMA))
    if doc.get("status") == "error":
        return Source([], [], doc.get("node"), False, False, None, 2, error=doc.get("error"))
    try:
        recs = [Recommendation(**{k: r[k] for k in Recommendation.__dataclass_fields__}) for r in doc["recommendations"]]
    except (KeyError, TypeError) as err:
        raise ApplyError("The report {0} has a malformed recommendation ({1}).".format(path, err))
    host = (doc.get("evidence") or {}).get("host") or {}
    source = doc.get("source") or {}
    out = Source(recs, verify.metrics_from_json(doc), doc.get("node"), bool(host.get("local")),
                 bool(host.get("in_container")), None, doc.get("exit_code", 1), url=source.get("url"),
                 window=(doc.get("window") or {}).get("seconds"))
    out.from_file = True
    return out


def host_commands(recs):
    lines = ["  " + r.command for r in recs]
    conf = [r.sysctl_conf_line for r in recs if r.sysctl_conf_line]
    if conf:
        lines.append("and, to keep them across reboots, in {0}:".format(persist.DROPIN))
        lines += ["  " + c for c in conf]
    return "\n".join(lines) + "\n"


# -- the commands ------------------------------------------------------------------------------

def do_apply(args, paths):
    dry = args.dry_run
    remote = bool(args.node) or (args.url is not None and not _loopback(args.url))
    if not dry and not remote:
        need_root("--apply")
    state = StateDir(paths.root)
    if not dry and not remote:
        state.lock(create=True)
    try:
        previous = _load_state(state, dry)
        if previous is not None and previous.status == APPLYING:
            if dry:
                say("an earlier --apply was interrupted (snapshot {0}); --apply offers to finish it or roll it "
                    "back.".format(state.real_file))
            else:
                return recover(args, paths, state, previous)
        if not dry and not remote and not args.yes and not sys.stdin.isatty():
            confirm(args, "")   # refuses now, before examining the machine for nothing
        source = load_report(args.report) if args.report else gather_report(args, paths, remote)
        if source.error is not None:
            raise ApplyError(source.error)
        where = _elsewhere(source, remote)
        if where or source.in_container:
            if source.text:
                sys.stdout.write(source.text)
            if source.recs:
                print("Commands to run as root on {0}:".format("the host" if source.in_container and not where else
                                                               "node {0}".format(source.node)))
                sys.stdout.write(host_commands(source.recs))
            if where:
                raise ApplyError("--apply changes only the machine it runs on, and this evidence is about {0}; "
                                 "run the commands above on that host.".format(where))
            raise ApplyError("This runs inside a container that cannot change the host's network settings; "
                             "run the commands above on the host (or netdrops-advisor --apply there).")
        if source.text:
            sys.stdout.write(source.text + "\n")
        if not source.recs:
            print("Nothing to change: {0}".format("no setting here would help (see above)." if source.exit_code == 1
                                                  else "the advisor recommends no change."))
            return source.exit_code
        plan = build_plan(source.recs, paths, previous)
        if plan.empty and not plan.conflicts:
            print("Nothing new to change: {0}.".format("; ".join(plan.skipped) or "every recommended value is in place"))
            print("The files that keep them are up to date.")
            return 0
        if not plan.empty:
            print("Changes{0} (as a diff):".format(" --apply would make" if dry else ""))
            sys.stdout.write(render_diff(plan, paths))
        _print_notes(plan)
        if plan.conflicts:
            raise ApplyError("; ".join(plan.conflicts) + ". Nothing was changed.")
        if dry:
            print("Dry run: nothing was changed.")
            return 1
        if not confirm(args, "Apply these changes?"):
            print("Not applied: nothing was changed.")
            return 1
        record = None
        if source.metrics:
            record = {"window": source.window, "metrics": [m.to_dict() for m in source.metrics]}
        snap = execute(plan, paths, state, previous, record)
        print("Applied. What was there before is saved in {0}; undo with: {1}".format(
            state.real_file, again(args, "--rollback")))
        for change in plan.runtime:
            print("  " + change.because)
        for change in plan.files:
            print("  wrote {0} ({1}): {2}".format(paths.real(change.path),
                                                  "replaced" if change.before.exists else "new", change.purpose))
        if args.verify:
            return run_verify(args, paths, source.metrics or _saved_metrics(snap))
        return 0
    finally:
        state.release()


def _loopback(url):
    return is_loopback_url(url)


def _elsewhere(source, remote):
    """A description of the other machine the evidence is about, or None when it is this one."""
    if remote or not source.local:
        return "node {0}{1}".format(source.node, " (read from {0})".format(source.url) if source.url else "")
    if source.from_file and source.node != socket.gethostname():
        return "node {0}, not this machine ({1})".format(source.node, socket.gethostname())
    return None


def _load_state(state, dry):
    try:
        return state.load()
    except StateError:
        if dry:
            return None   # e.g. not root: the diff is still useful
        raise


def _print_notes(plan):
    if plan.skipped:
        print("Already in place: {0}.".format("; ".join(plan.skipped)))
    if plan.notes:
        print("At boot:")
        for note in plan.notes:
            print("  " + note)


def recover(args, paths, state, snap):
    runtime, files = pending(snap, paths)
    print("An earlier --apply was interrupted: the snapshot {0} ({1}) holds its plan.".format(state.real_file, snap.updated))
    for entry, live in runtime:
        print("  not done yet: {0} {1} -> {2}".format(entry.setting, live, entry.applied))
    for entry in files:
        print("  not done yet: write {0}".format(paths.real(entry.path)))
    if not runtime and not files:
        print("  every change was made; only the record was not completed")
    if args.yes:
        choice = "f"
    elif sys.stdin.isatty():
        try:
            choice = input("Roll it back, finish it, or quit? [r/f/Q] ").strip().lower()[:1]
        except EOFError:
            choice = "q"
    else:
        raise ApplyError("An earlier --apply was interrupted and left its snapshot {0}: run `{1}` to restore what was "
                         "there before, or `{2}` to finish it.".format(state.real_file, again(args, "--rollback"),
                                                                      again(args, "--apply") + " --yes"))
    if choice == "r":
        return _report_rollback(rollback(snap, paths, state))
    if choice != "f":
        print("Nothing was changed.")
        return 1
    settings_done, files_done = finish(snap, paths, state)
    print("Finished the interrupted --apply ({0} setting{1}, {2} file{3} written); undo with: {4}".format(
        len(settings_done), "" if len(settings_done) == 1 else "s", len(files_done), "" if len(files_done) == 1 else "s",
        again(args, "--rollback")))
    if args.verify:
        return run_verify(args, paths, _saved_metrics(snap))
    return 0


def _saved_metrics(snap):
    return [verify.Metric.from_dict(m) for m in (snap.verify or {}).get("metrics", [])]


def run_verify(args, paths, metrics):
    if not metrics:
        raise ApplyError("There are no drop rates from before the change to compare with.")
    seconds = args.window or VERIFY_WINDOW
    print("Measuring the drop rates for {0:g} s ...".format(seconds), flush=True)
    elapsed = verify.measure(paths.hostfs, metrics, seconds)
    sys.stdout.write(verify.render_table(metrics, elapsed))
    return verify.exit_code(metrics)


def do_verify(args, paths):
    need_root("--verify")
    snap = StateDir(paths.root).load()
    if snap is None or not (snap.verify or {}).get("metrics"):
        raise ApplyError("--verify compares with the drop rates measured before an --apply, and {0} holds no such "
                         "record: run --apply --verify.".format(persist.under(paths.root, StateDir(paths.root).file)))
    if snap.status == APPLYING:
        raise ApplyError("An earlier --apply was interrupted; run --apply to finish it or --rollback first.")
    return run_verify(args, paths, _saved_metrics(snap))


def do_rollback(args, paths):
    need_root("--rollback")
    state = StateDir(paths.root)
    state.lock(create=False)
    try:
        snap = state.load()
        if snap is None:
            print("Nothing to roll back: there is no snapshot at {0}.".format(state.real_file))
            return 0
        print("--rollback restores what was there before netdrops-advisor --apply ({0}):".format(snap.created))
        for entry in snap.runtime:
            print("  {0}: back to {1}".format(entry.setting, entry.original))
        for entry in snap.files:
            print("  {0}: {1}".format(paths.real(entry.path), "restored" if entry.original.exists else "removed"))
        if not confirm(args, "Roll back?"):
            print("Nothing was changed.")
            return 1
        return _report_rollback(rollback(snap, paths, state))
    finally:
        state.release()


def _report_rollback(result):
    for line in result.restored:
        print("  " + line)
    for line in result.left:
        print("  left: " + line)
    if result.failed:
        say("rolling back failed: {0}; the snapshot is kept, run --rollback again once that is fixed.".format(
            "; ".join(s.rstrip(".") for s in result.failed)))
        return 2
    print("Rolled back{0}.".format(": everything netdrops changed is as it was" if not result.left else
                                   ", except what someone else changed since (above)"))
    return result.exit_code
