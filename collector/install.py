"""Install the collector into a Netdata installation, and remove exactly what was installed.

Netdata runs its plugins as user `netdata` with its own interpreter (/usr/bin/python3 on
Debian), which cannot read a pip install under root's home; so the collector's package (and, for
the plugin's Netdata Function, the advisor's) is copied into a directory of Netdata's (LIB), and
the python.d module or plugin launcher is written with that directory on its path. Every file
written is listed in a manifest beside the package; a configuration file the user already has is
left as it is.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile

import netdrops_collector

log = logging.getLogger("netdrops")

MANIFEST = "install-manifest.json"
NETDATA_PYTHON = "/usr/bin/python3"

# (plugins.d, python.d, user config, our library) relative to a root, most common first.
KNOWN_LAYOUTS = (
    ("usr/lib/netdata/plugins.d", "usr/lib/netdata/python.d", "etc/netdata", "usr/lib/netdata/netdrops"),
    ("usr/libexec/netdata/plugins.d", "usr/libexec/netdata/python.d", "etc/netdata", "usr/libexec/netdata/netdrops"),
    ("opt/netdata/usr/libexec/netdata/plugins.d", "opt/netdata/usr/libexec/netdata/python.d",
     "opt/netdata/etc/netdata", "opt/netdata/usr/libexec/netdata/netdrops"),
)


class InstallError(Exception):
    pass


class Layout:
    def __init__(self, plugins_dir, pythond_dir, config_dir, lib_dir, pythond_named=False):
        self.netdata_version = None  # (major, minor) when named by the user
        self.plugins_dir = plugins_dir
        self.pythond_dir = pythond_dir
        self.config_dir = config_dir
        self.lib_dir = lib_dir
        self.pythond_named = pythond_named

    @property
    def has_pythond(self):
        """A python.d directory named by the user is trusted; a detected one must hold the
        framework python.d.plugin ships (Netdata v2 builds may leave it out)."""
        if self.pythond_named:
            return True
        return os.path.exists(os.path.join(self.plugins_dir, "python.d.plugin")) \
            and os.path.isdir(os.path.join(self.pythond_dir, "python_modules", "bases"))


def detect(root=None, plugins_dir=None, pythond_dir=None, config_dir=None, lib_dir=None):
    """The Netdata installation under root (default '/'); explicit directories win."""
    roots = [root] if root else ["/"]
    if not root:
        roots.append("/opt/netdata")
    for base in roots:
        for rel_plugins, rel_pythond, rel_config, rel_lib in KNOWN_LAYOUTS:
            cand = os.path.join(base, rel_plugins)
            if base == "/opt/netdata" and rel_plugins.startswith("opt/"):
                continue
            if plugins_dir or os.path.isdir(cand):
                return Layout(plugins_dir or cand,
                              pythond_dir or os.path.join(base, rel_pythond),
                              config_dir or os.path.join(base, rel_config),
                              lib_dir or os.path.join(base, rel_lib),
                              pythond_named=bool(pythond_dir))
    raise InstallError("no Netdata installation found under {0}; name it with --netdata".format(" or ".join(roots)))


def package_dir():
    return os.path.dirname(os.path.abspath(netdrops_collector.__file__))


# Where each data package sits: inside the installed package, or beside it in a source checkout
# (setup.cfg maps these repository folders into the package when it is built).
DATA_DIRS = {"netdata_health": "health.d", "netdata_conf": "conf.d", "pythond": "pythond"}


def advisor_dir():
    """The advisor package beside this collector, or None where it is not installed."""
    try:
        import netdrops_advisor
    except ImportError:
        return None
    return os.path.dirname(os.path.abspath(netdrops_advisor.__file__))


def data_file(package, *parts):
    installed = os.path.join(package_dir(), package, *parts)
    if os.path.exists(installed):
        return installed
    checkout = os.path.join(os.path.dirname(package_dir()), DATA_DIRS[package], *parts)
    if os.path.exists(checkout):
        return checkout
    raise InstallError("{0} is missing from this installation".format(os.path.join(package, *parts)))


def write_atomic(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".netdrops-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def path_line(lib_dir):
    return "import sys; sys.path.insert(0, {0!r})  # written by netdrops-collector install\n".format(lib_dir)


def plugin_launcher(lib_dir, python=NETDATA_PYTHON):
    return ("#!{0}\n# netdrops.plugin: Netdata external plugin for receive-path drops.\n{1}"
            "from netdrops_collector.plugin import main\n\nsys.exit(main())\n").format(python, path_line(lib_dir))


def planned_files(layout, mode, health):
    """[(destination, bytes, file mode, is_config)] for an install in `mode`."""
    files = []
    src = package_dir()
    for name in sorted(os.listdir(src)):
        if name.endswith(".py"):
            files.append((os.path.join(layout.lib_dir, "netdrops_collector", name),
                          read_bytes(os.path.join(src, name)), 0o644, False))
    advisor = advisor_dir() if mode == "plugin" else None
    for name in sorted(os.listdir(advisor)) if advisor else ():
        if name.endswith(".py"):  # the plugin's Function runs the advisor in Netdata's interpreter
            files.append((os.path.join(layout.lib_dir, "netdrops_advisor", name),
                          read_bytes(os.path.join(advisor, name)), 0o644, False))
    if mode == "python.d":
        module = read_bytes(data_file("pythond", "netdrops.chart.py"))
        files.append((os.path.join(layout.pythond_dir, "netdrops.chart.py"),
                      path_line(layout.lib_dir).encode() + module, 0o644, False))
        files.append((os.path.join(layout.config_dir, "python.d", "netdrops.conf"),
                      read_bytes(data_file("netdata_conf", "python.d", "netdrops.conf")), 0o644, True))
    else:
        files.append((os.path.join(layout.plugins_dir, "netdrops.plugin"),
                      plugin_launcher(layout.lib_dir).encode(), 0o755, False))
        files.append((os.path.join(layout.config_dir, "netdrops.conf"),
                      read_bytes(data_file("netdata_conf", "netdrops.conf")), 0o644, True))
    if health:
        # 1.37 filters interfaces with `families:` and names CPUs with `foreach`; 1.38+ and v2
        # ignore `families:` (every interface would alarm) and have no `foreach`: another file.
        source = ("netdrops.conf",) if health_syntax(layout) == "1.37" else ("v2", "netdrops.conf")
        files.append((os.path.join(layout.config_dir, "health.d", "netdrops.conf"),
                      read_bytes(data_file("netdata_health", *source)), 0o644, True))
    return files


def parse_netdata_version(text):
    """'netdata v1.37.1' or 'netdata v2.2.6-1-g0' -> (1, 37); None when there is no version."""
    m = re.search(r"v?(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def netdata_binaries(layout):
    """Where the netdata binary may be: beside the layout (/usr/lib/netdata/plugins.d ->
    /usr/sbin/netdata; /opt/netdata/usr/libexec/netdata/plugins.d -> /opt/netdata/bin/netdata),
    then on PATH (plugin directories named one by one belong to the system's Netdata)."""
    usr = os.path.dirname(os.path.dirname(os.path.dirname(layout.plugins_dir.rstrip("/"))))
    found = [os.path.join(usr, "sbin/netdata"), os.path.join(usr, "bin/netdata"),
             os.path.join(os.path.dirname(usr), "bin/netdata")]
    on_path = shutil.which("netdata", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return found + ([on_path] if on_path else [])


def netdata_version(layout):
    """The version of the netdata binary of this layout, asked with `netdata -v`."""
    for binary in netdata_binaries(layout):
        if os.access(binary, os.X_OK):
            try:
                out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            version = parse_netdata_version(out.stdout + out.stderr)
            if version:
                return version
    return None


def health_syntax(layout):
    version = layout.netdata_version or netdata_version(layout)
    if version is None:
        log.info("could not tell the Netdata version; installing the alarms for Netdata 1.38 and later "
                 "(use --netdata-version 1.37 for older)")
        return "v2"
    return "1.37" if version < (1, 38) else "v2"


def load_manifest(layout):
    path = os.path.join(layout.lib_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise InstallError("cannot read {0}: {1}".format(path, error))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise InstallError("{0} is not an install manifest".format(path))
    return manifest


def missing_dirs(path):
    """The directories above `path` that do not exist yet, outermost first."""
    missing = []
    d = os.path.dirname(path)
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    return list(reversed(missing))


def pythond_disabled(layout):
    """A python.d.conf in the user config that would keep the module from running, or None."""
    path = os.path.join(layout.config_dir, "python.d.conf")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [l.split("#", 1)[0].strip().replace(" ", "") for l in f]
    except OSError:
        return None
    if "netdrops:no" in lines or ("default_run:no" in lines and "netdrops:yes" not in lines):
        return path
    return None


def digest(data):
    return hashlib.sha256(data).hexdigest()


def edited_since_install(path, manifest):
    """True when a configuration file we wrote no longer holds what we wrote: the user edited it."""
    recorded = manifest.get("hashes", {}).get(path)
    try:
        return recorded is not None and digest(read_bytes(path)) != recorded
    except OSError:
        return False


def install(root=None, mode="auto", health=True, dry_run=False, netdata_version=None, **dirs):
    layout = detect(root, **dirs)
    if netdata_version:
        layout.netdata_version = parse_netdata_version(netdata_version)
        if layout.netdata_version is None:
            raise InstallError("--netdata-version takes a version such as 1.37 or 2.2, not {0!r}".format(netdata_version))
    if mode == "auto":
        mode = "python.d" if layout.has_pythond else "plugin"
    elif mode == "python.d" and not layout.has_pythond:
        raise InstallError("this Netdata has no python.d.plugin (in {0}); use --mode plugin".format(layout.plugins_dir))
    previous = load_manifest(layout) or {"files": [], "dirs": []}
    owned = set(previous["files"])
    created_dirs = list(previous.get("dirs", []))
    hashes = dict(previous.get("hashes", {}))
    plan = []
    planned = planned_files(layout, mode, health)
    for dest, data, fmode, is_config in planned:
        if is_config and os.path.exists(dest) and dest not in owned:
            log.info("keeping %s (already there, not ours)", dest)
            continue
        if is_config and edited_since_install(dest, previous):
            log.info("keeping %s (edited since netdrops installed it)", dest)
            continue
        if dest in owned and os.path.exists(dest) and read_bytes(dest) == data:
            continue
        plan.append((dest, data, fmode))
    for dest, _data, _mode in plan:
        log.info("%s %s", "would write" if dry_run else "writing", dest)
    if dry_run:
        return 0
    for dest, _data, _mode in plan:
        created_dirs.extend(d for d in missing_dirs(dest) if d not in created_dirs)
    keep = {dest for dest, _d, _m, _c in planned if dest in owned or dest in {p[0] for p in plan}}
    configs = {dest for dest, _d, _m, is_config in planned if is_config}
    # The manifest is written before the files, listing every file this install may create,
    # so that an install cut short can still be uninstalled.
    save_manifest(layout, mode, sorted(owned | keep), created_dirs, hashes)
    for dest, data, fmode in plan:
        write_atomic(dest, data, fmode)
        if dest in configs:
            hashes[dest] = digest(data)
    for path in sorted(owned - keep):  # a mode switch: the other front-end's files go
        if edited_since_install(path, previous):
            log.info("keeping %s (edited since netdrops installed it)", path)
        else:
            _remove(path)
        hashes.pop(path, None)
    save_manifest(layout, mode, sorted(keep), created_dirs, hashes)
    if not plan:
        log.info("netdrops (%s) is already installed in %s; nothing to change", mode, layout.plugins_dir)
    else:
        log.info("installed netdrops (%s) into %s; restart Netdata to load it", mode, layout.plugins_dir)
    disabled = pythond_disabled(layout) if mode == "python.d" else None
    if disabled:
        log.warning("%s keeps python.d modules off unless named: add the line 'netdrops: yes' to it", disabled)
    return 0


def save_manifest(layout, mode, files, dirs, hashes):
    manifest = {"mode": mode, "files": files, "dirs": dirs, "hashes": hashes}
    write_atomic(os.path.join(layout.lib_dir, MANIFEST), json.dumps(manifest, indent=1).encode())


def _remove(path):
    try:
        os.unlink(path)
        log.info("removed %s", path)
    except FileNotFoundError:
        pass


def uninstall(root=None, dry_run=False, **dirs):
    layout = detect(root, **dirs)
    manifest = load_manifest(layout)
    if manifest is None:
        raise InstallError("nothing to uninstall: no {0} in {1}".format(MANIFEST, layout.lib_dir))
    for path in manifest["files"]:
        if edited_since_install(path, manifest):
            log.info("keeping %s (edited since netdrops installed it)", path)
        elif dry_run:
            log.info("would remove %s", path)
        else:
            _remove(path)
    if dry_run:
        return 0
    _remove(os.path.join(layout.lib_dir, MANIFEST))
    packages = [os.path.join(layout.lib_dir, p) for p in ("netdrops_collector", "netdrops_advisor")]
    for package in packages:
        shutil.rmtree(os.path.join(package, "__pycache__"), ignore_errors=True)
    # Directories install created, deepest first, if nothing else lives in them now.
    created = manifest.get("dirs", []) + packages + [layout.lib_dir]
    for d in sorted(set(created), key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass
    log.info("netdrops removed; restart Netdata to unload it")
    return 0
