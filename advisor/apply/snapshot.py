"""The state directory (/var/lib/netdrops/apply under --root) and the snapshot in it.

The snapshot is written, atomically, BEFORE the first change of an --apply. It holds, for every
setting and file netdrops has changed on this machine, what was there before netdrops first
touched it (runtime value as the kernel showed it; a file's bytes, mode and owner, or that it did
not exist), the value or bytes netdrops writes, the directories netdrops created, and the drop
rates measured before (for a later --verify).

status "applying" means an --apply was under way: if no process holds the state lock, it was
killed, and the next run offers to roll back or to finish. status "applied" is the record
--rollback undoes. A later --apply adds to the same record; originals are never overwritten, so
--rollback always returns to the state before netdrops' first change.
"""

import base64
import datetime
import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from typing import List, Optional

from . import persist, settings
from ..jsonshape import finite_number, require_dict
from .persist import FileState, PersistError
from .settings import SettingError

STATE_DIR = "/var/lib/netdrops/apply"
SNAPSHOT_FILE = STATE_DIR + "/snapshot.json"
SCHEMA = "netdrops-apply-snapshot/1"
APPLYING, APPLIED = "applying", "applied"


class StateError(Exception):
    """One sentence about the state directory or the snapshot."""


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RuntimeEntry:
    path: str          # logical: /proc/sys/net/core/..., /sys/class/net/DEV/queues/rx-N/...
    setting: str
    value_type: str
    original: str      # as the kernel showed it before netdrops first changed it
    applied: str       # what netdrops writes
    cause: str = ""
    reason: str = ""

    def to_dict(self):
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, doc):
        entry = cls(**{k: require_dict(doc, "runtime entry").get(k, "") for k in cls.__dataclass_fields__})
        # rollback writes `original` to `path` and compares texts: a number or list there would
        # crash it halfway
        if not all(isinstance(v, str) for v in entry.__dict__.values()) or not entry.path.startswith("/"):
            raise TypeError("runtime entry {0!r}: not texts with an absolute path".format(entry.path))
        return entry


@dataclass
class FileEntry:
    original: FileState   # before netdrops first wrote the file
    applied: bytes        # what netdrops writes
    purpose: str = ""

    @property
    def path(self):
        return self.original.path

    def to_dict(self):
        return {"original": self.original.to_dict(), "applied_b64": base64.b64encode(self.applied).decode("ascii"),
                "applied_sha256": persist.sha256(self.applied), "purpose": self.purpose}

    @classmethod
    def from_dict(cls, doc):
        doc = require_dict(doc, "file entry")
        if not isinstance(doc.get("purpose", ""), str):
            raise TypeError("file entry purpose is a {0}, not text".format(type(doc["purpose"]).__name__))
        return cls(FileState.from_dict(doc["original"]), persist.decode_b64(doc["applied_b64"], doc.get("applied_sha256")),
                   doc.get("purpose", ""))


@dataclass
class Snapshot:
    status: str = APPLYING
    host: str = field(default_factory=socket.gethostname)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    runtime: List[RuntimeEntry] = field(default_factory=list)
    files: List[FileEntry] = field(default_factory=list)
    dirs: List[str] = field(default_factory=list)         # logical dirs netdrops created for its files
    state_dirs: List[str] = field(default_factory=list)   # logical dirs of the state path it created
    verify: Optional[dict] = None                         # drop rates before the change

    def to_dict(self):
        return {"schema": SCHEMA, "status": self.status, "host": self.host, "created": self.created,
                "updated": self.updated, "runtime": [e.to_dict() for e in self.runtime],
                "files": [e.to_dict() for e in self.files], "dirs": list(self.dirs),
                "state_dirs": list(self.state_dirs), "verify": self.verify}

    @classmethod
    def from_dict(cls, doc):
        if require_dict(doc, "the snapshot").get("schema") != SCHEMA:
            raise ValueError("schema is {0!r}, not {1!r}".format(doc.get("schema"), SCHEMA))
        # What rollback, finishing a killed run and --verify use without looking: checked here so
        # that a damaged snapshot is refused in one sentence instead of crashing them halfway.
        if doc["status"] not in (APPLYING, APPLIED):
            raise ValueError("status {0!r} is neither {1!r} nor {2!r}".format(doc["status"], APPLYING, APPLIED))
        lists = [doc["runtime"], doc["files"], doc.get("dirs", []), doc.get("state_dirs", [])]
        if not all(isinstance(items, list) for items in lists) or not all(
                isinstance(d, str) and d.startswith("/") for d in lists[2] + lists[3]):
            raise TypeError("runtime, files, dirs or state_dirs is not a list (of absolute paths)")
        _check_verify(doc.get("verify"))
        return cls(status=doc["status"], host=doc.get("host", ""), created=doc.get("created", ""),
                   updated=doc.get("updated", ""), runtime=[RuntimeEntry.from_dict(e) for e in doc["runtime"]],
                   files=[FileEntry.from_dict(e) for e in doc["files"]], dirs=list(doc.get("dirs", [])),
                   state_dirs=list(doc.get("state_dirs", [])), verify=doc.get("verify"))

    def copy(self):
        return Snapshot.from_dict(json.loads(json.dumps(self.to_dict())))

    def runtime_entry(self, path):
        for entry in self.runtime:
            if entry.path == path:
                return entry
        return None

    def file_entry(self, path):
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    def merged(self, runtime, files, dirs, verify=None):
        """A copy with this run's changes added: an entry netdrops already holds keeps its
        original and takes the new applied value."""
        snap = self.copy()
        snap.status, snap.updated = APPLYING, _now()
        for entry in runtime:
            held = snap.runtime_entry(entry.path)
            if held is None:
                snap.runtime.append(entry)
            else:
                held.applied, held.cause, held.reason = entry.applied, entry.cause, entry.reason
        for entry in files:
            held = snap.file_entry(entry.path)
            if held is None:
                snap.files.append(entry)
            else:
                held.applied, held.purpose = entry.applied, entry.purpose
        snap.dirs.extend(d for d in dirs if d not in snap.dirs)
        if verify is not None:
            snap.verify = verify
        return snap


def _check_verify(verify):
    """The drop rates before the change, as --verify reads them (verify.Metric.from_dict)."""
    if verify is None:
        return
    rows = require_dict(verify, "verify").get("metrics", [])
    if not isinstance(rows, list):
        raise TypeError("verify metrics is a {0}, not a list".format(type(rows).__name__))
    for row in rows:
        row = require_dict(row, "verify metric")
        cpu, device, before = row.get("cpu"), row.get("device"), row.get("before")
        if not (isinstance(row["metric"], str) and isinstance(row["kind"], str)
                and (cpu is None or (isinstance(cpu, int) and not isinstance(cpu, bool)))
                and (device is None or isinstance(device, str))
                and (before is None or finite_number(before))):
            raise TypeError("verify metric {0!r} of the wrong types".format(row["metric"]))


class StateDir:
    """The state directory under a root, with an exclusive lock so that two runs never change
    the machine at once."""

    def __init__(self, root):
        self.root = root
        self.dir = STATE_DIR
        self.file = SNAPSHOT_FILE
        self.created = []     # logical dirs this process created
        self._fd = None

    @property
    def real_file(self):
        return persist.under(self.root, self.file)

    def lock(self, create=True):
        """Take the lock (creating the directory, mode 0700, if needed)."""
        if create:
            for directory in persist.missing_dirs(self.root, self.file):
                try:
                    os.mkdir(persist.under(self.root, directory), 0o700)
                except OSError as err:
                    raise StateError("Could not create the state directory {0}: {1}.".format(
                        persist.under(self.root, directory), err.strerror))
                self.created.append(directory)
        real = persist.under(self.root, self.dir)
        try:
            self._fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return self   # nothing to protect yet (read-only commands)
        except OSError as err:
            raise StateError("Could not open the state directory {0}: {1}.".format(real, err.strerror))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise StateError("Another netdrops-advisor --apply or --rollback is running (it holds {0}); "
                             "wait for it to finish.".format(real))
        return self

    def release(self):
        """Drop the lock; remove the directories this process created if no snapshot is left."""
        if not os.path.exists(self.real_file):
            self._remove_dirs(self.created)
        self.created = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def load(self):
        try:
            with open(self.real_file, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise StateError("Could not read {0}: permission denied (run as root).".format(self.real_file))
        except (OSError, ValueError, RecursionError) as err:   # ('[' * 5000 is too deep for json)
            raise StateError("The snapshot {0} cannot be read ({1}); inspect it, and remove it only if you "
                             "know what it held.".format(self.real_file, err))
        try:
            return Snapshot.from_dict(doc)
        except (KeyError, TypeError, ValueError) as err:
            raise StateError("The snapshot {0} is not one netdrops-advisor can use ({1}).".format(self.real_file, err))

    def save(self, snap):
        for directory in self.created:
            if directory not in snap.state_dirs:
                snap.state_dirs.append(directory)
        data = (json.dumps(snap.to_dict(), indent=1) + "\n").encode("utf-8")
        try:
            persist.write_atomic(self.root, self.file, data, mode=0o600)
        except OSError as err:
            raise StateError("Could not write the snapshot {0}: {1}.".format(self.real_file, err.strerror))

    def discard(self, snap):
        """Remove the snapshot, and the state directories netdrops created, once empty."""
        try:
            os.unlink(self.real_file)
        except FileNotFoundError:
            pass
        persist.remove_temp_files(self.root, self.file)
        self._remove_dirs(list(snap.state_dirs) + [d for d in self.created if d not in snap.state_dirs])
        self.created = []

    def _remove_dirs(self, dirs):
        for directory in sorted(set(dirs), key=len, reverse=True):
            try:
                os.rmdir(persist.under(self.root, directory))
            except OSError:
                pass


# -- rollback ----------------------------------------------------------------------------------

@dataclass
class RollbackResult:
    restored: List[str] = field(default_factory=list)   # what was put back
    left: List[str] = field(default_factory=list)       # changed by someone else since: left alone
    failed: List[str] = field(default_factory=list)     # could not be restored

    @property
    def exit_code(self):
        return 2 if self.failed else (1 if self.left else 0)


def rollback(snap, paths, state):
    """Put back everything the snapshot holds, newest first; discard the snapshot when nothing
    failed. A runtime value that is now neither netdrops' nor the original was changed by
    someone else: it is left as it is and named."""
    result = RollbackResult()
    for entry in reversed(snap.runtime):
        restore_runtime(entry, paths, result)
    for entry in reversed(snap.files):
        restore_file(entry, paths.root, result)
    for directory in reversed(snap.dirs):
        real = persist.under(paths.root, directory)
        try:
            os.rmdir(real)
            result.restored.append("removed directory {0} (netdrops created it)".format(directory))
        except FileNotFoundError:
            pass
        except OSError as err:
            result.left.append("directory {0} kept: {1}".format(directory, err.strerror))
    if not result.failed:
        state.discard(snap)
    return result


def restore_runtime(entry, paths, result):
    try:
        live = settings.read_value(paths, entry.path)
    except SettingError as err:
        if entry.path.startswith("/sys/class/net/") and not os.path.exists(paths.real(entry.path)):
            result.restored.append("{0}: the device is gone, nothing to restore".format(entry.setting))
        else:
            result.failed.append(str(err))
        return
    if settings.settled(entry.path, entry.value_type, entry.original, live):
        return   # never written (a killed run), or already back
    if not settings.settled(entry.path, entry.value_type, entry.applied, live):
        result.left.append("{0} is {1} now, not the {2} netdrops wrote: someone changed it since, so it is "
                           "left as it is (it was {3} before netdrops)".format(entry.setting, live, entry.applied,
                                                                                entry.original))
        return
    try:
        back = settings.write_value(paths, entry.path, entry.original)
    except SettingError as err:
        result.failed.append(str(err))
        return
    if not settings.settled(entry.path, entry.value_type, entry.original, back):
        result.failed.append("{0}: wrote {1} but the kernel shows {2}".format(entry.setting, entry.original, back))
        return
    result.restored.append("{0}: {1} -> {2}".format(entry.setting, live, back))


def restore_file(entry, root, result):
    persist.remove_temp_files(root, entry.path)
    try:
        now = persist.read_state(root, entry.path)
    except PersistError as err:
        result.failed.append(str(err))
        return
    original = entry.original
    if now.exists == original.exists and now.data == original.data and (
            not now.exists or (now.mode, now.uid, now.gid) == (original.mode, original.uid, original.gid)):
        return
    edited = now.exists and now.data != entry.applied
    try:
        persist.restore(root, original)
    except OSError as err:
        result.failed.append("Restoring {0} failed: {1}.".format(persist.under(root, entry.path), err.strerror))
        return
    what = "restored its earlier content" if original.exists else "removed it (netdrops created it)"
    note = " (it had been edited since netdrops wrote it)" if edited else ""
    result.restored.append("{0}: {1}{2}".format(entry.path, what, note))
