"""--apply: turn recommendations into a plan (runtime writes + files that keep them), show it
as a diff, and carry it out all or nothing.

Steps, in the spirit of tuned's apply / verify / unapply:
  plan      every recommendation is checked against the allow-list and the live value before
            anything is written; raise-only values are never lowered; a setting already at its
            value is skipped (a second --apply with nothing new changes nothing); a boot-time
            sysctl file that would undo a value at the next reboot stops the plan.
  snapshot  the originals are saved (snapshot.py) BEFORE the first write.
  apply     runtime values first (the kernel may refuse one), each read back; then the files,
            each written atomically. The first failure undoes every change of this run, in
            reverse, and names the write that failed and why.
  finish    completes a plan a killed run left in the snapshot.
Nothing here runs a program: values are written to /proc and /sys files directly.

execute() passes named fault-injection points (checkpoint() below) where a killed run leaves a
snapshot to recover from; in the product they do nothing.
"""

import difflib
import os
from dataclasses import dataclass, field
from typing import List

from netdrops_collector.kernel.links import classify_sysfs
from netdrops_collector.kernel.tuning import format_cpu_mask, parse_cpu_mask

from . import persist, settings
from .persist import DROPIN, UDEV_RULES, FileState, PersistError
from .settings import SettingError
from .snapshot import APPLIED, FileEntry, RuntimeEntry, Snapshot, StateError, rollback

DEFAULT_MASK = "net.core.rps_default_mask"


class ApplyError(Exception):
    """One sentence: the plan was refused, or a write failed (and what was undone)."""


@dataclass
class RuntimeChange:
    path: str
    setting: str
    value_type: str
    current: str
    new: str
    rec: object

    @property
    def because(self):
        return "changed {0} from {1} -> {2} ({3}); why: {4}".format(
            self.setting, self.current, self.new, self.rec.cause, " ".join(self.rec.reason.split()))


@dataclass
class FileChange:
    before: FileState
    after: bytes
    purpose: str
    mode: int = 0o644

    @property
    def path(self):
        return self.before.path


@dataclass
class Plan:
    runtime: List[RuntimeChange] = field(default_factory=list)
    files: List[FileChange] = field(default_factory=list)
    dirs: List[str] = field(default_factory=list)          # logical dirs to create, outermost first
    skipped: List[str] = field(default_factory=list)       # already at their value
    notes: List[str] = field(default_factory=list)         # how each setting is kept at boot
    conflicts: List[str] = field(default_factory=list)     # would be undone at the next boot

    @property
    def empty(self):
        return not self.runtime and not self.files


def checkpoint(point):
    """A named point of execute() where a crash must be recoverable: 'after-snapshot',
    'after-write-N' (the Nth runtime value), 'after-file'. It does nothing. The crash tests run
    the advisor through tests/advisor_killed_at.py, which replaces this function in its own
    process to SIGKILL itself at one point; no environment variable, file or option reaches
    it, so a real --apply cannot be killed here by accident."""


# -- plan --------------------------------------------------------------------------------------

def build_plan(recs, paths, snapshot=None):
    """Plan for `recs` on the machine `paths` points at. Raises ApplyError (nothing written)."""
    plan = Plan()
    persisted = []     # recs whose value netdrops keeps across reboots
    seen = {}
    for rec in recs:
        if rec.path in seen:
            if seen[rec.path] != rec.new:
                raise ApplyError("Two different values for {0} ({1} and {2}). Nothing was changed.".format(
                    rec.setting, seen[rec.path], rec.new))
            continue
        seen[rec.path] = rec.new
        try:
            value_type = settings.check_target(rec, paths)
            live = settings.read_value(paths, rec.path)
        except SettingError as err:
            raise ApplyError(str(err) + " Nothing was changed.")
        if settings.settled(rec.path, value_type, rec.new, live):
            plan.skipped.append("{0} is already {1}".format(rec.setting, live))
            persisted.append(rec)
            continue
        if rec.raise_only:
            have, want = settings.parse(value_type, live), settings.parse(value_type, rec.new)
            if have is not None and have >= want:
                plan.skipped.append("{0} is {1}, already above the recommended {2}: netdrops only raises it".format(
                    rec.setting, live, rec.new))
                continue
        elif rec.current is not None and not settings.settled(rec.path, value_type, rec.current, live):
            raise ApplyError("{0} changed since the diagnosis (it was {1}, it is {2} now): run netdrops-advisor "
                             "again. Nothing was changed.".format(rec.setting, rec.current, live))
        plan.runtime.append(RuntimeChange(rec.path, rec.setting, value_type, live, rec.new, rec))
        persisted.append(rec)
    try:
        _plan_dropin(plan, [r for r in persisted if r.kind == "sysctl"], paths)
        _plan_rps(plan, [r for r in persisted if r.kind == "sysfs"], paths)
    except PersistError as err:
        raise ApplyError(str(err) + " Nothing was changed.")
    for change in plan.files:
        for directory in persist.missing_dirs(paths.root, change.path):
            if directory not in plan.dirs:
                plan.dirs.append(directory)
    return plan


def _own_file(path, paths):
    """The file's present state; PersistError when something not written by netdrops is there."""
    state = persist.read_state(paths.root, path)
    if state.exists and not persist.is_ours(state.data):
        raise PersistError("{0} exists and was not written by netdrops-advisor; move it away or merge it "
                           "by hand, then run --apply again.".format(paths.real(path)))
    return state


def _plan_dropin(plan, recs, paths):
    if not recs:
        return
    before = _own_file(DROPIN, paths)
    entries = persist.parse_dropin(before.data.decode("utf-8", "replace")) if before.exists else {}
    for rec in recs:
        held = entries.get(rec.setting)
        if held is not None and rec.raise_only and rec.value_type == "int":
            try:
                if int(held[1]) >= int(rec.new):
                    continue
            except ValueError:
                pass
        entries[rec.setting] = (persist.dropin_comment(rec), rec.new)
    text = persist.render_dropin(entries)
    if not before.exists or before.data != text.encode("utf-8"):
        plan.files.append(FileChange(before, text.encode("utf-8"), "keeps the net.core settings across reboots"))
    ours = {k: v for k, (_c, v) in entries.items()}
    found = persist.boot_assignments(paths.root, ours, replace={DROPIN: text})
    planned = {r.setting for r in recs}
    for key, items in found.items():
        mine = [a for a in items if a.path == DROPIN]
        if not mine:
            continue
        winner = items[-1]
        earlier = [a for a in items[:items.index(mine[-1])] if a.path != DROPIN]
        if earlier:
            plan.notes.append("{0}: {1} overrides {2}".format(key, DROPIN, persist.describe_assignments(earlier)))
        value_type = "cpumask" if key in settings.CPUMASK_SYSCTLS else "int"
        if winner.path == DROPIN or settings.parse(value_type, winner.value) == settings.parse(value_type, ours[key]):
            continue
        try:
            higher = settings.parse("int", winner.value) >= settings.parse("int", ours[key])
        except TypeError:
            higher = False
        if higher and key not in settings.CPUMASK_SYSCTLS:
            plan.notes.append("{0}: at boot {1} sets {2}, read after {3}; that is not lower than {4}, so it "
                              "stands".format(key, winner.where, winner.value, DROPIN, ours[key]))
            continue
        sentence = ("{0} would go back to {1} at the next boot: {2} sets it and is read after {3}; change or remove "
                    "that line, then run --apply again".format(key, winner.value, winner.where, DROPIN))
        (plan.conflicts if key in planned else plan.notes).append(sentence)


def _plan_rps(plan, recs, paths):
    """RPS/RFS settings last for devices that appear later: rps_default_mask (6.3+) covers the
    rps_cpus of new veths; everything else gets a udev rule."""
    if not recs:
        return
    default_mask = None
    if os.path.exists(paths.real(settings.sysctl_path(DEFAULT_MASK))):
        planned = [c for c in plan.runtime if c.setting == DEFAULT_MASK]
        try:
            default_mask = planned[0].new if planned else settings.read_value(paths, settings.sysctl_path(DEFAULT_MASK))
        except SettingError:
            default_mask = None
    rules, values = {}, {}
    for rec in recs:
        kind, _wireless = classify_sysfs(paths.hostfs, rec.device)
        attribute = "queues/" + rec.path.split("/queues/", 1)[1]   # queues/rx-N/rps_cpus
        if kind == "veth" and attribute.endswith("/rps_cpus") and settings.parse("cpumask", default_mask or "0"):
            plan.notes.append("{0}: new veths get RPS from net.core.rps_default_mask = {1}".format(rec.setting, default_mask))
            continue
        match = persist.udev_match(rec.device, kind)
        value = rec.new
        held = values.get((match, attribute))
        if held is not None and held != value:
            # one rule for every veth: the union of the masks, the largest flow table
            if rec.value_type == "cpumask":
                value = format_cpu_mask(parse_cpu_mask(held) | parse_cpu_mask(value), _mask_bits(held, value))
            else:
                value = str(max(int(held), int(value)))
        values[(match, attribute)] = value
        rule = persist.udev_rule(match, attribute, value)
        rules[rule.rsplit('="', 1)[0]] = rule
        plan.notes.append("{0}: kept by a udev rule in {1} ({2})".format(
            rec.setting, UDEV_RULES, "every veth added later" if kind == "veth" else "when {0} is added".format(rec.device)))
    if not rules:
        return
    before = _own_file(UDEV_RULES, paths)
    held = persist.parse_udev(before.data.decode("utf-8", "replace")) if before.exists else {}
    held.update(rules)
    data = persist.render_udev(held).encode("utf-8")
    if not before.exists or before.data != data:
        plan.files.append(FileChange(before, data, "keeps RPS/RFS for devices added later"))


def _mask_bits(*masks):
    """CPU count implied by the widest mask text (32 per comma group)."""
    return 32 * max(m.count(",") + 1 for m in masks)


# -- showing it --------------------------------------------------------------------------------

def render_diff(plan, paths):
    """The plan as a unified diff: runtime values as one-line files, then the files."""
    out = []
    for change in plan.runtime:
        real = paths.real(change.path)
        out += ["--- {0}".format(real), "+++ {0}".format(real), "@@ -1 +1 @@ {0}".format(change.setting),
                "-" + change.current, "+" + change.new]
    for change in plan.files:
        real = paths.real(change.path)
        old = change.before.data.decode("utf-8", "replace").splitlines() if change.before.exists else []
        new = change.after.decode("utf-8", "replace").splitlines()
        out += list(difflib.unified_diff(old, new, "/dev/null" if not change.before.exists else real, real,
                                         lineterm=""))
    return "\n".join(out) + ("\n" if out else "")


# -- carrying it out ---------------------------------------------------------------------------

def _entries(plan):
    runtime = [RuntimeEntry(c.path, c.setting, c.value_type, c.current, c.new, c.rec.cause,
                            " ".join(c.rec.reason.split())) for c in plan.runtime]
    files = [FileEntry(c.before, c.after, c.purpose) for c in plan.files]
    return runtime, files


def execute(plan, paths, state, previous=None, verify=None):
    """Snapshot, then every write; on the first failure undo this run's writes and raise
    ApplyError. Returns the saved snapshot."""
    runtime, files = _entries(plan)
    snap = (previous or Snapshot()).merged(runtime, files, plan.dirs, verify)
    state.save(snap)
    checkpoint("after-snapshot")
    done, made, written = [], [], []
    try:
        for n, change in enumerate(plan.runtime, 1):
            live = settings.write_value(paths, change.path, change.new)
            done.append(change)
            if not settings.settled(change.path, change.value_type, change.new, live):
                raise SettingError("The kernel kept {0} at {1} after {2} was written to {3}.".format(
                    change.setting, live, change.new, paths.real(change.path)))
            checkpoint("after-write-{0}".format(n))
        for directory in plan.dirs:
            try:
                os.mkdir(paths.real(directory), 0o755)
            except OSError as err:
                raise PersistError("Creating {0} failed: {1}.".format(paths.real(directory), err.strerror))
            made.append(directory)
        for change in plan.files:
            try:
                persist.write_atomic(paths.root, change.path, change.after, change.mode)
            except OSError as err:
                raise PersistError("Writing {0} failed: {1}.".format(paths.real(change.path), err.strerror))
            written.append(change)
            checkpoint("after-file")
    except KeyboardInterrupt:
        problems = _undo(done, written, made, paths)
        if problems:
            raise ApplyError("Interrupted, and undoing the changes already made failed ({0}); the snapshot {1} is "
                             "kept: run netdrops-advisor --rollback.".format("; ".join(problems), state.real_file))
        if previous is not None:
            state.save(previous)
        else:
            state.discard(snap)
        raise ApplyError("Interrupted. " + _undone_sentence(done, written))
    except (SettingError, PersistError) as err:
        problems = _undo(done, written, made, paths)
        if problems:
            raise ApplyError("{0} Undoing the earlier changes also failed ({1}); the snapshot {2} is kept: "
                             "run netdrops-advisor --rollback.".format(err, "; ".join(problems), state.real_file))
        if previous is not None:
            state.save(previous)
        else:
            state.discard(snap)
        raise ApplyError("{0} {1}".format(err, _undone_sentence(done, written)))
    snap.status = APPLIED
    state.save(snap)
    return snap


def _undone_sentence(done, written):
    n = len(done) + len(written)
    if n == 0:
        return "Nothing had been changed yet; nothing was changed."
    return "The {0} change{1} already made {2} undone; the machine is as it was.".format(
        n, "" if n == 1 else "s", "was" if n == 1 else "were")


def _undo(done, written, made, paths):
    problems = []
    for change in reversed(written):
        try:
            persist.restore(paths.root, change.before)
        except OSError as err:
            problems.append("{0}: {1}".format(paths.real(change.path), err.strerror))
    for directory in reversed(made):
        try:
            os.rmdir(paths.real(directory))
        except OSError as err:
            problems.append("{0}: {1}".format(paths.real(directory), err.strerror))
    for change in reversed(done):
        try:
            back = settings.write_value(paths, change.path, change.current)
            if not settings.settled(change.path, change.value_type, change.current, back):
                problems.append("{0} is {1}, not {2}".format(change.setting, back, change.current))
        except SettingError as err:
            problems.append(str(err))
    return problems


def pending(snap, paths):
    """What an interrupted apply had not done yet: (runtime entries, file entries) still at their
    originals. Raises ApplyError for one that is neither the original nor netdrops' value."""
    runtime, files = [], []
    for entry in snap.runtime:
        if entry.path.startswith("/sys/") and not os.path.exists(paths.real(entry.path)):
            continue   # the device went away: nothing to finish or undo there
        try:
            live = settings.read_value(paths, entry.path)
        except SettingError as err:
            raise ApplyError(str(err))
        if settings.settled(entry.path, entry.value_type, entry.applied, live):
            continue
        if not settings.settled(entry.path, entry.value_type, entry.original, live):
            raise ApplyError("{0} is {1}: neither the {2} it was nor the {3} netdrops was writing; "
                             "someone changed it meanwhile".format(entry.setting, live, entry.original, entry.applied))
        runtime.append((entry, live))
    for entry in snap.files:
        try:
            now = persist.read_state(paths.root, entry.path)
        except PersistError as err:
            raise ApplyError(str(err))
        if now.exists and now.data == entry.applied:
            continue
        files.append(entry)
    return runtime, files


def finish(snap, paths, state):
    """Complete the plan a killed --apply left in the snapshot. On failure roll everything back
    (the machine returns to its state before netdrops) and raise ApplyError."""
    try:
        runtime, files = pending(snap, paths)
        for entry, _live in runtime:
            live = settings.write_value(paths, entry.path, entry.applied)
            if not settings.settled(entry.path, entry.value_type, entry.applied, live):
                raise SettingError("The kernel kept {0} at {1} after {2} was written.".format(
                    entry.setting, live, entry.applied))
        for directory in snap.dirs:
            if not os.path.isdir(paths.real(directory)):
                os.mkdir(paths.real(directory), 0o755)
        for entry in files:
            persist.remove_temp_files(paths.root, entry.path)
            persist.write_atomic(paths.root, entry.path, entry.applied)
    except (ApplyError, SettingError, PersistError, OSError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        result = rollback(snap, paths, state)
        if result.failed:
            raise ApplyError("Finishing the interrupted --apply failed ({0}), and so did rolling it back ({1}); "
                             "the snapshot {2} is kept.".format(reason.rstrip("."), "; ".join(result.failed), state.real_file))
        raise ApplyError("Finishing the interrupted --apply failed ({0}); everything netdrops had changed was "
                         "rolled back.".format(reason.rstrip(".")))
    snap.status = APPLIED
    state.save(snap)
    return [e.setting for e, _ in runtime], [e.path for e in files]


__all__ = ["ApplyError", "Plan", "build_plan", "render_diff", "execute", "finish", "pending", "StateError"]
