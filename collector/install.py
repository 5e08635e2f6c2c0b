"""Install the collector into a Netdata installation, and remove exactly what was installed.

Netdata runs its plugins as user `netdata` with its own interpreter (/usr/bin/python3 on
Debian), which cannot read a pip install under root's home; so the collector's package (and, for
the plugin's Netdata Function, the advisor's) is copied into a directory of Netdata's (LIB), and
the python.d module or plugin launcher is written with that directory on its path. Every file
written is listed in a manifest beside the package; a configuration file the user already has is
left as it is.

Netdata in Docker (`--docker`): the official image keeps only /etc/netdata, /var/lib/netdata and
/var/cache/netdata across a re-created container, so everything goes under the config volume
(plugin in custom-plugins.d, library in netdrops/), launchers find the library relative to
themselves, and the manifest names files relative to the volume, which the host and the
container mount at different paths.

The drop-reasons helper (reasons_helper.py): the plugin and the python.d module run as
`netdata`, which may not open the kernel's perf counters, so install also writes the helper's
launcher (in LIB) and its systemd units (netdrops-reasons.socket, netdrops-reasons@.service),
enables the socket when systemd runs, and mounts tracefs when it is not mounted. Only for this
host's own unit directory (/etc/systemd/system) does it touch the running system (systemctl,
mount); units written under --netdata ROOT or --units-dir are files only. All of it is in the
manifest, so uninstall undoes exactly what install did.
"""

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile

import netdrops_collector
from netdrops_collector.kernel import reasons, tracefs

log = logging.getLogger("netdrops")

MANIFEST = "install-manifest.json"
NETDATA_PYTHON = "/usr/bin/python3"  # Debian's and the official Docker image's python3
DOCKER_CONFIG_DIR = "/etc/netdata"   # the image's config volume, as the container sees it
HEALTH_FILE = "netdrops.conf"                    # in health.d, for our charts (1.37 or v2 syntax)
OPENMETRICS_HEALTH_FILE = "netdrops-openmetrics.conf"  # in health.d, for go.d's prometheus contexts
# Where a user's 1.37 alarm file goes on an upgrade to v2: Netdata loads only health.d/*.conf
# (checked on the real v2.11: a file of this name beside it is not read).
MOVED_137_SUFFIX = ".1.37-edited"

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
    def __init__(self, plugins_dir, pythond_dir, config_dir, lib_dir, pythond_named=False, docker=False,
                 units_dir=None):
        self.netdata_version = None  # (major, minor) when named by the user
        self.units_dir = units_dir   # where the helper's systemd units go; None: no units (Docker)
        self.plugins_dir = plugins_dir
        self.pythond_dir = pythond_dir
        self.config_dir = config_dir
        self.lib_dir = lib_dir
        self.pythond_named = pythond_named
        self.docker = docker  # all under config_dir, paths relative to it (see the module's docstring)

    @property
    def has_pythond(self):
        """A python.d directory named by the user is trusted; a detected one must hold the
        framework python.d.plugin ships (Netdata v2 builds may leave it out)."""
        if self.pythond_named:
            return True
        return os.path.exists(os.path.join(self.plugins_dir, "python.d.plugin")) \
            and os.path.isdir(os.path.join(self.pythond_dir, "python_modules", "bases"))


def detect(root=None, plugins_dir=None, pythond_dir=None, config_dir=None, lib_dir=None, units_dir=None):
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
                lib = lib_dir or os.path.join(base, rel_lib)
                return Layout(plugins_dir or cand,
                              pythond_dir or os.path.join(base, rel_pythond),
                              config_dir or os.path.join(base, rel_config),
                              lib, pythond_named=bool(pythond_dir),
                              units_dir=units_dir or default_units_dir(root, plugins_dir, lib))
    raise InstallError("no Netdata installation found under {0}; name it with --netdata".format(" or ".join(roots)))


def default_units_dir(root, plugins_dir, lib_dir):
    """The helper's units: this host's /etc/systemd/system for its own Netdata, ROOT's for a tree
    under --netdata ROOT. A Netdata named directory by directory (an unusual layout, a test
    instance) is not taken for this host's: its units stay beside its library until --units-dir
    says where (e.g. --units-dir /etc/systemd/system)."""
    if plugins_dir and not root:
        return os.path.join(lib_dir, "systemd")
    return os.path.join(root or "/", SYSTEM_UNITS_DIR.lstrip("/"))


def docker_layout(config_dir=None):
    """The official image's layout, under the host directory of its /etc/netdata volume.

    Checked on the real v2.11: its default `[directories] plugins` is the stock plugins.d and
    CONFIG/custom-plugins.d; every directory after the first is passed to plugins as
    NETDATA_USER_PLUGINS_DIRS, and python.d.plugin loads user modules from `<each>/python.d`.
    """
    config = os.path.abspath(config_dir or DOCKER_CONFIG_DIR)
    if not os.path.isdir(config):
        raise InstallError("{0} is not a directory: with --docker, --config-dir names the host directory "
                           "of the container's /etc/netdata volume (docker volume inspect --format "
                           "'{{{{.Mountpoint}}}}' netdataconfig)".format(config))
    plugins = os.path.join(config, "custom-plugins.d")
    return Layout(plugins, os.path.join(plugins, "python.d"), config, os.path.join(config, "netdrops"),
                  pythond_named=True, docker=True)


def find_layout(root=None, docker=False, **dirs):
    if not docker:
        return detect(root, **dirs)
    others = [name for name in ("plugins_dir", "pythond_dir", "lib_dir", "units_dir") if dirs.get(name)]
    if root or others:
        raise InstallError("--docker puts everything under --config-dir; it takes no --netdata, --plugins-dir, "
                           "--pythond-dir, --lib-dir or --units-dir")
    return docker_layout(dirs.get("config_dir"))


def package_dir():
    return os.path.dirname(os.path.abspath(netdrops_collector.__file__))


# Where each data package sits: inside the installed package, or beside it in a source checkout
# (setup.cfg maps these repository folders into the package when it is built).
DATA_DIRS = {"netdata_health": "health.d", "netdata_conf": "conf.d", "pythond": "pythond",
             "systemd_units": "systemd"}


ADVISOR_PACKAGE = "netdrops_advisor"
# The advisor's Function provider, which the plugin launcher passes to the plugin when the
# advisor is copied beside the collector (the collector itself never imports the advisor).
ADVISOR_FUNCTION_PROVIDER = "netdrops_advisor.function:provide"


def advisor_dir():
    """The advisor package beside this collector, or None where it is not installed: located,
    not imported."""
    try:
        spec = importlib.util.find_spec(ADVISOR_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.submodule_search_locations:
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


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


def path_line(lib_dir, relative_to=None):
    """The launcher's first line: the library on sys.path, by absolute path, or (relative_to: the
    launcher's directory) relative to the launcher's own location, so that the line holds wherever
    a Docker volume is mounted."""
    if relative_to is None:
        return "import sys; sys.path.insert(0, {0!r})  # written by netdrops-collector install\n".format(lib_dir)
    rel = os.path.relpath(lib_dir, relative_to)
    return ("import os, sys; sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname("
            "os.path.realpath(__file__)), {0!r})))  # written by netdrops-collector install\n").format(rel)


def launcher_path_line(layout, dest):
    return path_line(layout.lib_dir, os.path.dirname(dest) if layout.docker else None)


def plugin_launcher(lib_dir, python=NETDATA_PYTHON, first_line=None, providers=()):
    """The netdrops.plugin script; `providers`: the 'module:callable' specs of the Function
    providers installed beside the collector (the plugin loads them, logging one that fails)."""
    return ("#!{0}\n# netdrops.plugin: Netdata external plugin for receive-path drops.\n{1}"
            "from netdrops_collector.frontends.plugin import main\n\nsys.exit(main(providers={2!r}))\n").format(
                python, first_line or path_line(lib_dir), list(providers))


def module_files(src):
    """The .py files of the package at `src` and of its sub-packages (folders with an
    __init__.py), relative to `src`, sorted; data packages are not modules and stay out."""
    found = []
    for d, subdirs, names in os.walk(src):
        if d == src:
            subdirs[:] = [s for s in subdirs if s not in DATA_DIRS]
        subdirs[:] = sorted(s for s in subdirs if os.path.exists(os.path.join(d, s, "__init__.py")))
        found.extend(os.path.relpath(os.path.join(d, n), src) for n in names if n.endswith(".py"))
    return sorted(found)


def package_files(layout, mode):
    """The collector's package (and, for the plugin's Netdata Function, the advisor's) in LIB."""
    packages = [("netdrops_collector", package_dir())]
    advisor = advisor_dir() if mode == "plugin" else None
    if advisor:  # the plugin's Function runs the advisor in Netdata's interpreter
        packages.append((ADVISOR_PACKAGE, advisor))
    return [(os.path.join(layout.lib_dir, package, rel), read_bytes(os.path.join(src, rel)), 0o644, False)
            for package, src in packages for rel in module_files(src)]


def front_end_files(layout, mode):
    if mode == "python.d":
        dest = os.path.join(layout.pythond_dir, "netdrops.chart.py")
        module = read_bytes(data_file("pythond", "netdrops.chart.py"))
        return [(dest, launcher_path_line(layout, dest).encode() + module, 0o644, False),
                (os.path.join(layout.config_dir, "python.d", "netdrops.conf"),
                 read_bytes(data_file("netdata_conf", "python.d", "netdrops.conf")), 0o644, True)]
    dest = os.path.join(layout.plugins_dir, "netdrops.plugin")
    providers = [ADVISOR_FUNCTION_PROVIDER] if advisor_dir() else []  # package_files copies it then
    return [(dest, plugin_launcher(layout.lib_dir, first_line=launcher_path_line(layout, dest),
                                   providers=providers).encode(), 0o755, False),
            (os.path.join(layout.config_dir, "netdrops.conf"),
             read_bytes(data_file("netdata_conf", "netdrops.conf")), 0o644, True)]


def health_file(layout, mode, syntax):
    """(destination, bytes) of the alarms for `mode` on a Netdata of `syntax` ('1.37' or 'v2')."""
    if mode == "openmetrics":
        # go.d's prometheus contexts exist on v2 nodes; the file is in 1.38+ syntax only.
        if syntax == "1.37":
            raise InstallError("the OpenMetrics alarms (go.d's prometheus contexts) are for Netdata 1.38 "
                               "and later; this Netdata is older")
        return (os.path.join(layout.config_dir, "health.d", OPENMETRICS_HEALTH_FILE),
                read_bytes(data_file("netdata_health", "v2", OPENMETRICS_HEALTH_FILE)))
    # 1.37 filters interfaces with `families:` and names CPUs with `foreach`; 1.38+ and v2
    # ignore `families:` (every interface would alarm) and have no `foreach`: another file.
    source = (HEALTH_FILE,) if syntax == "1.37" else ("v2", HEALTH_FILE)
    return (os.path.join(layout.config_dir, "health.d", HEALTH_FILE), read_bytes(data_file("netdata_health", *source)))


def planned_files(layout, mode, health, syntax):
    """[(destination, bytes, file mode, is_config)] for an install in `mode`."""
    files = []
    if mode != "openmetrics":  # an OpenMetrics node runs the exporter and go.d: no plugin here
        files = package_files(layout, mode) + front_end_files(layout, mode) + helper_files(layout)
    if health:
        dest, data = health_file(layout, mode, syntax)
        files.append((dest, data, 0o644, True))
    return files


# -- the drop-reasons helper: launcher, systemd units, tracefs ----------------------------------

SYSTEM_UNITS_DIR = "/etc/systemd/system"  # this host's units; only there does install run systemctl
SYSTEMD_RUNNING = "/run/systemd/system"   # exists only when systemd is PID 1 (sd_booted)
SOCKET_UNIT = "netdrops-reasons.socket"
SERVICE_UNIT = "netdrops-reasons@.service"
HELPER_LAUNCHER = "netdrops-reasons-helper"  # in LIB, beside the package it runs
HELPER_RUN_DIR = os.path.dirname(reasons.DEFAULT_SOCKET)
LISTEN_COMMAND = "netdrops-collector reasons-helper --listen " + reasons.DEFAULT_SOCKET
TRACEFS_FSTAB = "tracefs {0} tracefs defaults 0 0".format(tracefs.DEFAULT_MOUNT)


def for_this_host(layout):
    """Whether the helper's units go into this host's unit directory, so that install may enable
    them and mount tracefs; a tree under --netdata ROOT or --units-dir only gets the files."""
    return layout.units_dir is not None and os.path.abspath(layout.units_dir) == SYSTEM_UNITS_DIR


def helper_launcher(lib_dir, python=NETDATA_PYTHON):
    """The helper's script in LIB. -I: a root process takes no PYTHON* variables, user site or
    script directory; the copy in LIB (root's, like the launcher) is all it imports."""
    return ("#!{0} -I\n# netdrops-reasons-helper: opens the drop-reason counters as root and passes them to the "
            "netdrops collector (netdrops-reasons@.service, or --listen PATH without systemd).\n{1}"
            "from netdrops_collector.reasons_helper import main\n\nsys.exit(main())\n").format(python, path_line(lib_dir))


def unit_path_arg(path):
    """A path as one ExecStart= argument: % starts a specifier, blanks split arguments."""
    path = path.replace("%", "%%")
    return '"{0}"'.format(path) if re.search(r"\s", path) else path


def service_unit(launcher):
    text = read_bytes(data_file("systemd_units", SERVICE_UNIT)).decode()
    text, n = re.subn(r"^ExecStart=.*$", lambda _m: "ExecStart=" + unit_path_arg(launcher), text, flags=re.M)
    if n != 1:
        raise InstallError("{0} has no single ExecStart= line".format(SERVICE_UNIT))
    return text.encode()


def helper_files(layout):
    """The launcher and the units; none in Docker, where the helper must run on the host."""
    if layout.units_dir is None:
        return []
    launcher = os.path.join(layout.lib_dir, HELPER_LAUNCHER)
    return [(launcher, helper_launcher(layout.lib_dir).encode(), 0o755, False),
            (os.path.join(layout.units_dir, SOCKET_UNIT), read_bytes(data_file("systemd_units", SOCKET_UNIT)),
             0o644, False),
            (os.path.join(layout.units_dir, SERVICE_UNIT), service_unit(launcher), 0o644, False)]


def systemd_running():
    return os.path.isdir(SYSTEMD_RUNNING)


def systemctl(*args):
    done = subprocess.run(["systemctl"] + list(args), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise InstallError("systemctl {0} failed: {1}".format(" ".join(args), (done.stderr or done.stdout).strip()))


def mount_tracefs(dry_run):
    """Mount tracefs where it is missing (the reason names are read from it): the mount point, or None."""
    if tracefs.find_root() is not None:
        return None
    if dry_run:
        log.info("would mount tracefs at %s", tracefs.DEFAULT_MOUNT)
        return None
    failed = tracefs.mount()
    if failed:
        log.warning("could not mount tracefs at %s (%s): drop reasons stay off until it is mounted",
                    tracefs.DEFAULT_MOUNT, failed)
        return None
    log.info("mounted tracefs at %s (the drop reasons' names are read from it); to mount it at boot, add "
             "`%s` to /etc/fstab (systemd does it itself: sys-kernel-tracing.mount)", tracefs.DEFAULT_MOUNT, TRACEFS_FSTAB)
    return tracefs.DEFAULT_MOUNT


def set_up_helper(layout, mode, dry_run, state):
    """Start what the helper needs on this host; `state` (the manifest's "helper") records what
    was done, for uninstall. Returns state."""
    if mode == "openmetrics":
        log.info("--mode openmetrics: `netdrops-collector openmetrics` run as root counts drop reasons itself; "
                 "no helper installed")
        return state
    if layout.units_dir is None:
        log.info("in Docker the drop-reasons helper must run on the host: there, as root, run `netdrops-collector "
                 "install` (or `%s`), and give the container the socket with -v %s:%s and its netdata group's id "
                 "(docker exec CONTAINER id -g netdata) as the helper's --group", LISTEN_COMMAND, HELPER_RUN_DIR,
                 HELPER_RUN_DIR)
        return state
    if not for_this_host(layout):
        log.info("the drop-reasons helper's units are in %s, not this host's %s, so nothing was enabled: "
                 "install with --units-dir %s to enable them here, copy them where that tree runs, or run `%s` "
                 "as root", layout.units_dir, SYSTEM_UNITS_DIR, SYSTEM_UNITS_DIR, LISTEN_COMMAND)
        if tracefs.find_root() is None:
            log.info("tracefs is not mounted here: drop reasons need `mount -t tracefs nodev %s`", tracefs.DEFAULT_MOUNT)
        return state
    mounted = mount_tracefs(dry_run)
    if mounted:
        state["mounted"] = sorted(set(state.get("mounted", [])) | {mounted})
    state["runtime"] = [reasons.DEFAULT_SOCKET, HELPER_RUN_DIR]
    if not systemd_running():
        log.info("systemd is not running here: start the drop-reasons helper as root from your init system: %s",
                 LISTEN_COMMAND)
        return state
    if dry_run:
        log.info("would run systemctl daemon-reload and systemctl enable --now %s", SOCKET_UNIT)
        return state
    systemctl("daemon-reload")
    systemctl("enable", "--now", SOCKET_UNIT)
    state["enabled"] = [SOCKET_UNIT]
    log.info("enabled %s: the plugin gets the drop-reason counters from %s", SOCKET_UNIT, reasons.DEFAULT_SOCKET)
    return state


def tear_down_helper(state, dry_run):
    """Undo set_up_helper, as recorded: stop and disable the socket, remove the socket a helper made,
    unmount tracefs if install mounted it. The unit files go with the manifest's files."""
    for unit in state.get("enabled", []):
        if not systemd_running():
            log.warning("%s was enabled, but systemd is not running now: disable it later (systemctl disable %s)",
                        unit, unit)
        elif dry_run:
            log.info("would run systemctl disable --now %s", unit)
        else:
            systemctl("disable", "--now", unit)
            log.info("disabled %s", unit)
    path = next((p for p in state.get("runtime", []) if p.endswith(".sock")), None)
    if path and _is_socket(path):
        if dry_run:
            log.info("would remove %s", path)
        else:
            _remove(path)
            log.info("a reasons-helper started by hand (--listen) keeps running until you stop it")
    for point in state.get("mounted", []):
        if dry_run:
            log.info("would unmount tracefs at %s (install mounted it)", point)
            continue
        failed = tracefs.unmount(point)
        if failed is None:
            log.info("unmounted tracefs at %s (install had mounted it)", point)
        else:
            log.warning("left tracefs mounted at %s: %s", point, failed)
    if not dry_run:
        for d in state.get("runtime", []):
            if not d.endswith(".sock"):
                try:
                    os.rmdir(d)  # only if empty
                except OSError:
                    pass


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


SYNTAX_137 = re.compile(rb"^[ \t]*(families|foreach)[ \t]*:", re.MULTILINE)


def has_137_syntax(data):
    """True for an alarm file that only Netdata 1.37 reads right: v2 skips `families:` silently
    (the alarm then covers every interface) and drops `foreach` (checked on the real v2.11: it
    logs "unknown keyword 'foreach'" and keeps one alarm over all CPUs)."""
    return SYNTAX_137.search(data) is not None


def moved_aside_name(path):
    """A name beside `path` that Netdata does not load and that holds nothing yet."""
    candidate, n = path + MOVED_137_SUFFIX, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = "{0}{1}.{2}".format(path, MOVED_137_SUFFIX, n)
    return candidate


def parse_netdata_version(text):
    """'netdata v1.37.1' or 'netdata v2.2.6-1-g0' -> (1, 37); None when there is no version."""
    m = re.search(r"v?(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


BINARY_PLACES = ("usr/sbin/netdata", "usr/bin/netdata", "sbin/netdata", "bin/netdata")


def layout_binaries(layout):
    """Where the netdata binary of this layout may be, nearest first: below each ancestor of its
    plugins and config directories (/usr/lib/netdata/plugins.d -> /usr/sbin/netdata;
    /opt/netdata/usr/libexec/netdata/plugins.d -> /opt/netdata/bin/netdata;
    /opt/nd2/etc/netdata -> /opt/nd2/usr/sbin/netdata); python.d and lib may be defaults of the
    system's layout, so they do not count. '/' itself is left to netdata_binaries,
    so that a layout elsewhere never takes the system's Netdata for its own."""
    found = []
    for d in (layout.plugins_dir, layout.config_dir):
        d = os.path.abspath(d)
        while os.path.dirname(d) != d:
            d = os.path.dirname(d)
            if d == "/":
                break
            found.extend(os.path.join(d, place) for place in BINARY_PLACES if os.path.join(d, place) not in found)
    return found


def netdata_binaries(layout):
    """The layout's own binaries, then the system's (/usr/sbin, then PATH)."""
    system = [os.path.join("/", place) for place in BINARY_PLACES[:2]]
    on_path = shutil.which("netdata", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    return layout_binaries(layout) + system + ([on_path] if on_path else [])


def find_netdata_version(layout):
    """(version, binary, beside_layout) from the first netdata binary that answers `netdata -v`,
    or (None, None, False)."""
    beside = set(layout_binaries(layout))
    for binary in netdata_binaries(layout):
        if os.access(binary, os.X_OK):
            try:
                out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.SubprocessError):
                continue
            version = parse_netdata_version(out.stdout + out.stderr)
            if version:
                return version, binary, binary in beside
    return None, None, False


def netdata_version(layout):
    """The version of the netdata binary of this layout, asked with `netdata -v`."""
    return find_netdata_version(layout)[0]


def target_version(layout):
    """(major, minor) of the Netdata installed into, or None; the log says which and how it was found."""
    version = layout.netdata_version
    if version is not None:
        log.info("installing for Netdata %d.%d (--netdata-version)", *version)
        return version
    if layout.docker:
        # The host's netdata (if any) is not the container's; the image has been v2 since 2024.
        log.info("installing for Netdata 1.38 and later, v2 included (--docker; "
                 "use --netdata-version for an image older than 1.38)")
        return None
    version, binary, beside = find_netdata_version(layout)
    if version is None:
        log.info("could not tell the Netdata version; installing the alarms for Netdata 1.38 and later "
                 "(use --netdata-version 1.37 for older)")
    elif beside:
        log.info("installing for Netdata %d.%d (%s -v, beside the directories)", version[0], version[1], binary)
    else:
        log.warning("installing for Netdata %d.%d (%s -v, the system's: no netdata binary beside the directories "
                    "named; use --netdata-version if they belong to another Netdata)", version[0], version[1], binary)
    return version


def health_syntax(version):
    """'1.37' or 'v2' (1.38 and later; also when the version is unknown)."""
    return "1.37" if version is not None and version < (1, 38) else "v2"


# A Docker install's manifest names its files relative to the config volume ("relative_to":
# "config_dir"): the host sees the volume at /var/lib/docker/volumes/..., the container at
# /etc/netdata, and either may run uninstall. Other manifests (and today's main's) hold absolute paths.
PATH_KEYS = ("files", "dirs")


def _rebase_manifest(manifest, convert):
    out = dict(manifest)
    for key in PATH_KEYS:
        out[key] = [convert(p) for p in manifest.get(key, [])]
    out["hashes"] = {convert(p): h for p, h in manifest.get("hashes", {}).items()}
    out["moved_aside"] = {convert(a): convert(o) for a, o in manifest.get("moved_aside", {}).items()}
    return out


def load_manifest(layout):
    path = os.path.join(layout.lib_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise InstallError("cannot read {0}: {1}".format(path, error))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) \
            or not isinstance(manifest.get("hashes", {}), dict) or not isinstance(manifest.get("moved_aside", {}), dict):
        raise InstallError("{0} is not an install manifest".format(path))
    if manifest.get("relative_to") == "config_dir":
        manifest = _rebase_manifest(manifest, lambda p: os.path.normpath(os.path.join(layout.config_dir, p)))
    return manifest


def save_manifest(layout, mode, files, dirs, hashes, moved_aside, helper=None):
    # helper: what install did on this host for the drop-reasons helper (set_up_helper):
    # {"enabled": [units], "runtime": [socket, its directory], "mounted": [tracefs it mounted]}.
    manifest = {"mode": mode, "files": files, "dirs": dirs, "hashes": hashes, "moved_aside": moved_aside,
                "helper": helper or {}}
    if layout.docker:
        manifest = _rebase_manifest(manifest, lambda p: os.path.relpath(p, layout.config_dir))
        manifest["relative_to"] = "config_dir"
    write_atomic(os.path.join(layout.lib_dir, MANIFEST), json.dumps(manifest, indent=1).encode())


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


def resolve_mode(layout, mode, version):
    if mode == "auto":
        # python.d is legacy on v2 (5 stock modules left); in Docker the image cannot be looked
        # into from the host either.
        if layout.docker or not layout.has_pythond or (version is not None and version >= (2, 0)):
            return "plugin"
        return "python.d"
    if mode == "python.d" and not layout.has_pythond:
        raise InstallError("this Netdata has no python.d.plugin (in {0}); use --mode plugin".format(layout.plugins_dir))
    return mode


def plan_install(planned, previous, syntax):
    """(files to write [(dest, bytes, mode)], 1.37 alarm files to move aside [(path, new name)]),
    leaving the user's configuration alone except a 1.37 alarm file on a v2 Netdata."""
    owned = set(previous["files"])
    plan, moves = [], []
    for dest, data, fmode, is_config in planned:
        exists = os.path.exists(dest)
        theirs = is_config and exists and (dest not in owned or edited_since_install(dest, previous))
        if theirs and syntax == "v2" and os.path.basename(dest) == HEALTH_FILE and has_137_syntax(read_bytes(dest)):
            moves.append((dest, moved_aside_name(dest)))
        elif theirs:
            why = "edited since netdrops installed it" if dest in owned else "already there, not ours"
            log.info("keeping %s (%s)", dest, why)
            continue
        elif dest in owned and exists and read_bytes(dest) == data:
            continue
        plan.append((dest, data, fmode))
    return plan, moves


def move_aside(path, new_name):
    """The user's file under new_name (a hard link first: never a moment without it, never over
    another file), before ours replaces it."""
    os.link(path, new_name)
    log.warning("moved your Netdata 1.37 alarm file %s to %s (Netdata v2 would ignore its `families:` "
                "and `foreach`); installed the v2 alarms in its place: carry your edits over to it", path, new_name)


def install(root=None, mode="auto", health=True, dry_run=False, netdata_version=None, docker=False, **dirs):
    layout = find_layout(root, docker, **dirs)
    if netdata_version:
        layout.netdata_version = parse_netdata_version(netdata_version)
        if layout.netdata_version is None:
            raise InstallError("--netdata-version takes a version such as 1.37 or 2.2, not {0!r}".format(netdata_version))
    version = target_version(layout)
    mode = resolve_mode(layout, mode, version)
    if mode == "openmetrics" and not health:
        raise InstallError("--mode openmetrics installs only the alarms; with --no-health there is nothing to do")
    previous = load_manifest(layout) or {"files": [], "dirs": []}
    owned = set(previous["files"])
    created_dirs = list(previous.get("dirs", []))
    hashes = dict(previous.get("hashes", {}))
    moved = dict(previous.get("moved_aside", {}))
    helper = dict(previous.get("helper", {}))
    syntax = health_syntax(version)
    planned = planned_files(layout, mode, health, syntax)
    plan, moves = plan_install(planned, previous, syntax)
    for path, new_name in moves:
        log.info("%s %s to %s", "would move" if dry_run else "moving", path, new_name)
    for dest, _data, _mode in plan:
        log.info("%s %s", "would write" if dry_run else "writing", dest)
    helper_planned = any(os.path.basename(p[0]) == SOCKET_UNIT for p in planned)
    if dry_run:
        set_up_helper(layout, mode, True, {})
        return 0
    for dest in [os.path.join(layout.lib_dir, MANIFEST)] + [p[0] for p in plan]:
        created_dirs.extend(d for d in missing_dirs(dest) if d not in created_dirs)
    keep = {dest for dest, _d, _m, _c in planned if dest in owned or dest in {p[0] for p in plan}}
    configs = {dest for dest, _d, _m, is_config in planned if is_config}
    moved.update({new_name: path for path, new_name in moves})
    # The manifest is written before the files, listing every file this install may create
    # (and the user's files it moves aside, which uninstall leaves), so that an install cut
    # short can still be uninstalled.
    save_manifest(layout, mode, sorted(owned | keep), created_dirs, hashes, moved, helper)
    for path, new_name in moves:
        move_aside(path, new_name)
    for dest, data, fmode in plan:
        write_atomic(dest, data, fmode)
        if dest in configs:
            hashes[dest] = digest(data)
    if not helper_planned and helper:  # a switch to openmetrics: the helper goes first
        tear_down_helper(helper, False)
        helper = {}
    for path in sorted(owned - keep):  # a mode switch: the other front-end's files go
        if edited_since_install(path, previous):
            log.info("keeping %s (edited since netdrops installed it)", path)
        else:
            _remove(path)
        hashes.pop(path, None)
    where = layout.config_dir if mode == "openmetrics" else layout.plugins_dir
    if not plan:
        log.info("netdrops (%s) is already installed in %s; nothing to change", mode, where)
    else:
        log.info("installed netdrops (%s) into %s; restart Netdata to load it%s", mode, where,
                 " (docker restart CONTAINER)" if layout.docker else "")
    helper = set_up_helper(layout, mode, False, helper)
    save_manifest(layout, mode, sorted(keep), created_dirs, hashes, moved, helper)
    disabled = pythond_disabled(layout) if mode == "python.d" else None
    if disabled:
        log.warning("%s keeps python.d modules off unless named: add the line 'netdrops: yes' to it", disabled)
    if mode == "openmetrics":
        print_go_d_job(layout)
    return 0


def print_go_d_job(layout):
    """go.d reads prometheus jobs only from go.d/prometheus.conf, the user's file: show the job
    to add rather than edit it."""
    job = read_bytes(data_file("netdata_conf", "go.d", "prometheus-netdrops.conf")).decode()
    target = os.path.join(layout.config_dir, "go.d", "prometheus.conf")
    print("# Add this job to the jobs: list of {0} (edit-config go.d/prometheus.conf), run\n"
          "# `netdrops-collector openmetrics` on this node, then restart Netdata:\n{1}".format(target, job), end="")


def _remove(path):
    try:
        os.unlink(path)
        log.info("removed %s", path)
    except FileNotFoundError:
        pass


def _inside(path, dirs):
    """Whether `path` lies below one of `dirs`."""
    return any(path.startswith(d + os.sep) for d in dirs)


def uninstall(root=None, dry_run=False, docker=False, **dirs):
    layout = find_layout(root, docker, **dirs)
    manifest = load_manifest(layout)
    if manifest is None:
        raise InstallError("nothing to uninstall: no {0} in {1}".format(MANIFEST, layout.lib_dir))
    tear_down_helper(manifest.get("helper", {}), dry_run)  # the socket stops before its units go
    for path in manifest["files"]:
        if edited_since_install(path, manifest):
            log.info("keeping %s (edited since netdrops installed it)", path)
        elif dry_run:
            log.info("would remove %s", path)
        else:
            _remove(path)
    for new_name, path in sorted(manifest.get("moved_aside", {}).items()):
        if os.path.exists(new_name):
            log.info("keeping %s (your 1.37 alarm file, moved aside from %s on the upgrade to v2)", new_name, path)
    if dry_run:
        return 0
    _remove(os.path.join(layout.lib_dir, MANIFEST))
    # Every folder that held a module we installed (sub-packages included, and those of an
    # older layout) has the __pycache__ Python wrote beside it.
    roots = [os.path.join(layout.lib_dir, p) for p in ("netdrops_collector", ADVISOR_PACKAGE)]
    packages = roots + sorted({os.path.dirname(path) for path in manifest["files"]
                               if path.endswith(".py") and _inside(path, roots)} - set(roots))
    for package in packages:
        shutil.rmtree(os.path.join(package, "__pycache__"), ignore_errors=True)
    # Directories install created, deepest first, if nothing else lives in them now (a lib dir
    # that was there before stays).
    created = manifest.get("dirs", []) + packages
    for d in sorted(set(created), key=len, reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass
    if manifest.get("helper", {}).get("enabled") and systemd_running():
        systemctl("daemon-reload")  # the units are gone
    log.info("netdrops removed; restart Netdata to unload it")
    return 0
