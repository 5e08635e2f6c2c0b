"""Making applied settings last: netdrops' own sysctl drop-in, the boot-time sysctl sources that
could override it, the udev rule for RPS where net.core.rps_default_mask cannot help, and
atomic file writes.

Boot-time precedence (systemd-sysctl, and procps `sysctl --system`; sysctl.d(5)):
  1. *.conf files in SYSCTL_DIRS; a file name found in several directories is read only from
     the first of them (/etc masks /run masks /usr/local/lib masks /usr/lib and /lib);
  2. the surviving files are read sorted by file name, whatever their directory: a later
     assignment overrides an earlier one;
  3. /etc/sysctl.conf last (procps reads it after the directories; Debian also links it in as
     /etc/sysctl.d/99-sysctl.conf, which systemd-sysctl 252 reads in that position).
Keys may be written with '/' separators and a leading '-' (ignore errors): both normalised.
Glob keys (systemd's `net.*.foo`) never override an explicit key, so they are not counted.

Paths here are logical (/etc/...); `root` is the directory they live under ('' for /).
"""

import base64
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from typing import List, Optional

from ..jsonshape import require_dict

SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"
# netdrops' sysctl drop-in: --apply writes it, and the report (render.py) tells people to.
DROPIN = "/etc/sysctl.d/90-netdrops.conf"
UDEV_RULES = "/etc/udev/rules.d/90-netdrops-rps.rules"   # after 80-net-setup-link.rules
MARKER = "# Written by netdrops-advisor --apply."
TEMP_SUFFIX = ".netdrops-tmp"   # never *.conf or *.rules: a leftover temp file is read by nobody


class PersistError(Exception):
    """One sentence: a file could not be read or written, or a setting cannot be kept."""


def under(root, path):
    """The real location of logical `path` (absolute) under `root` ('' = /)."""
    return (root or "") + path


# -- atomic files ------------------------------------------------------------------------------

@dataclass
class FileState:
    """A file as it was: absent, or its bytes, mode and owner."""
    path: str                  # logical
    exists: bool
    data: Optional[bytes] = None
    mode: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None

    def to_dict(self):
        return {"path": self.path, "exists": self.exists,
                "data_b64": None if self.data is None else base64.b64encode(self.data).decode("ascii"),
                "sha256": None if self.data is None else sha256(self.data),
                "mode": self.mode, "uid": self.uid, "gid": self.gid}

    @classmethod
    def from_dict(cls, doc):
        # Checked because --rollback writes these back as they are (TypeError / ValueError for
        # a snapshot damaged or edited by hand, which the state directory reports as one sentence).
        path, exists, data = require_dict(doc, "file entry")["path"], doc["exists"], doc.get("data_b64")
        data = None if data is None else decode_b64(data, doc.get("sha256"))
        numbers = [doc.get(k) for k in ("mode", "uid", "gid")]
        if not (isinstance(path, str) and path.startswith("/") and isinstance(exists, bool)) or not all(
                n is None or (isinstance(n, int) and not isinstance(n, bool)) for n in numbers):
            raise TypeError("file entry {0!r}: path, exists, mode or owner of the wrong type".format(path))
        if exists and (data is None or None in numbers):
            raise ValueError("file entry {0!r}: its bytes, mode or owner are missing".format(path))
        return cls(path, exists, data, *numbers)


def decode_b64(text, digest):
    """Bytes from the snapshot's base64 text, checked against their sha256 when it is given:
    b64decode() alone skips what is not base64, so damaged text would restore other bytes."""
    if not isinstance(text, str):
        raise TypeError("base64 data is a {0}, not text".format(type(text).__name__))
    data = base64.b64decode(text, validate=True)   # binascii.Error is a ValueError
    if digest is not None and digest != sha256(data):
        raise ValueError("bytes that do not match their sha256")
    return data


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def read_state(root, path):
    real = under(root, path)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return FileState(path, False)
    except OSError as err:
        raise PersistError("Could not read {0}: {1}.".format(real, err.strerror))
    if not os.path.isfile(real) or os.path.islink(real):
        raise PersistError("{0} is not a regular file; netdrops-advisor will not replace it.".format(real))
    try:
        with open(real, "rb") as f:
            data = f.read()
    except OSError as err:
        raise PersistError("Could not read {0}: {1}.".format(real, err.strerror))
    return FileState(path, True, data, st.st_mode & 0o7777, st.st_uid, st.st_gid)


def write_atomic(root, path, data, mode=0o644, uid=0, gid=0):
    """Write bytes to a temporary file beside `path`, fsync, set mode and owner, rename over
    `path`, fsync the directory. The file is either the old one or the new one, never half."""
    real = under(root, path)
    directory = os.path.dirname(real)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(real) + ".", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), uid, gid)
            os.fsync(f.fileno())
        os.rename(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def restore(root, state):
    """Put a file back as FileState says it was (bytes, mode, owner), or remove it."""
    real = under(root, state.path)
    if not state.exists:
        try:
            os.unlink(real)
        except FileNotFoundError:
            pass
        fsync_dir(os.path.dirname(real))
        return
    write_atomic(root, state.path, state.data, state.mode, state.uid, state.gid)


def remove_temp_files(root, path):
    """Temporary files a killed write left beside `path`."""
    real = under(root, path)
    directory, name = os.path.split(real)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if entry.startswith("." + name + ".") and entry.endswith(TEMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass


def missing_dirs(root, path):
    """Logical directories above `path` that do not exist yet, outermost first."""
    out = []
    directory = os.path.dirname(path)
    while directory not in ("", "/") and not os.path.isdir(under(root, directory)):
        out.append(directory)
        directory = os.path.dirname(directory)
    return list(reversed(out))


# -- boot-time sysctl sources ------------------------------------------------------------------

@dataclass
class Assignment:
    key: str
    value: str
    path: str        # logical path of the file read
    line: int
    via: Optional[str] = None   # a symlink's target, e.g. 99-sysctl.conf -> /etc/sysctl.conf

    @property
    def where(self):
        text = "{0} line {1}".format(self.path, self.line)
        if self.via:
            text += " (-> {0})".format(self.via)
        return text


def normalize_key(key):
    """'-net/core/x' -> 'net.core.x' (sysctl.d(5): '/' separators when the first one is '/')."""
    key = key.strip().lstrip("-").strip()
    first = re.search(r"[./]", key)
    if first and first.group() == "/":
        key = key.translate(str.maketrans("/.", "./"))
    return key


def parse_sysctl_conf(text, path, via=None):
    """[Assignment] in file order; comments (# ;) and lines without '=' are skipped."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = normalize_key(key)
        if not key or any(c in key for c in "*?["):
            continue
        out.append(Assignment(key, value.strip(), path, lineno, via))
    return out


def boot_files(root, replace=None):
    """The sysctl files boot reads, in the order it reads them: [(logical path, text, via)].
    `replace` maps a logical path to the text it will have (None: it will not exist)."""
    replace = dict(replace or {})
    chosen = {}
    for directory in SYSCTL_DIRS:
        names = set()
        try:
            names.update(n for n in os.listdir(under(root, directory)) if n.endswith(".conf"))
        except OSError:
            pass
        names.update(os.path.basename(p) for p in replace if os.path.dirname(p) == directory)
        for name in names:
            if name not in chosen:
                chosen[name] = directory + "/" + name
    files = []
    for name in sorted(chosen):
        files.append(chosen[name])
    files.append(SYSCTL_CONF)
    out = []
    for path in files:
        if path in replace:
            if replace[path] is not None:
                out.append((path, replace[path], None))
            continue
        real = under(root, path)
        via = None
        if os.path.islink(real):
            target = os.readlink(real)
            if target == "/dev/null":
                continue   # masked
            via = os.path.normpath(os.path.join(os.path.dirname(path), target))
        try:
            with open(real, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        out.append((path, text, via))
    return out


def boot_assignments(root, keys, replace=None):
    """{key: [Assignment]} in the order boot applies them: the last one wins."""
    keys = set(keys)
    found = {k: [] for k in keys}
    for path, text, via in boot_files(root, replace):
        for item in parse_sysctl_conf(text, path, via):
            if item.key in keys:
                found[item.key].append(item)
    return found


# -- netdrops' own files -----------------------------------------------------------------------

def is_ours(data):
    return data is not None and data.startswith(MARKER.encode())


def parse_dropin(text):
    """Our drop-in -> ordered {key: (comment lines, value)}."""
    entries = {}
    comments = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped != MARKER and not stripped.startswith("# `netdrops-advisor"):
            comments.append(stripped)
        elif not stripped:
            comments = []
        else:
            key, sep, value = stripped.partition("=")
            if sep:
                entries[normalize_key(key)] = (comments, value.strip())
            comments = []
    return entries


def render_dropin(entries):
    """{key: (comment lines, value)} -> the drop-in's text; each setting says why above it."""
    lines = [MARKER,
             "# `netdrops-advisor --rollback` restores what was here before; --apply rewrites this file.",
             ""]
    for key, (comments, value) in entries.items():
        lines.extend(comments)
        lines.append("{0} = {1}".format(key, value))
        lines.append("")
    return "\n".join(lines)


def dropin_comment(rec):
    return ["# {0}: {1}".format(rec.cause, _one_line(rec.reason))]


def _one_line(text):
    return " ".join(text.split())


# udev matches: a device name is matched literally only when it holds no glob or quoting
# characters (udev has no escape for '"' in older releases).
SAFE_UDEV_NAME = re.compile(r"^[A-Za-z0-9_.@+%=-]+\Z")   # ($ would let 'eth0\n' split the rule in two)


def udev_match(device, kind):
    """The match part of a rule for `device`: every veth (they come and go) by driver, other
    devices by name. Raises PersistError for a name udev cannot match literally."""
    if kind == "veth":
        return 'ACTION=="add", SUBSYSTEM=="net", ENV{ID_NET_DRIVER}=="veth"'
    if not SAFE_UDEV_NAME.match(device):
        raise PersistError("Interface name {0!r} cannot be matched literally in a udev rule, so its RPS "
                           "setting cannot be kept across reboots; rename it or set it at boot yourself.".format(device))
    return 'ACTION=="add", SUBSYSTEM=="net", KERNEL=="{0}"'.format(device)


def udev_rule(match, attribute, value):
    return '{0}, ATTR{{{1}}}="{2}"'.format(match, attribute, value)


def parse_udev(text):
    """Our rules file -> ordered {rule key (all but the value): line}."""
    rules = {}
    for line in text.splitlines():
        if line.startswith("ACTION=="):
            rules[line.rsplit('="', 1)[0]] = line
    return rules


def render_udev(rules):
    lines = [MARKER,
             "# RPS/RFS for devices that appear later (udev applies it when the device is added).",
             "# `netdrops-advisor --rollback` restores what was here before; --apply rewrites this file.",
             ""]
    lines.extend(rules.values())
    return "\n".join(lines) + "\n"


def describe_assignments(items: List[Assignment]):
    return "; ".join("{0} = {1} ({2})".format(a.key, a.value, a.where) for a in items)
