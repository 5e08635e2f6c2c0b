"""Netdata: a real Netdata daemon for tests, with its own directories: Debian's 1.37.1 (AGENT_137)
or the v2.11 that ../shared/netdata-v2 unpacks into /opt/nd2 (AGENT_V2).

Each instance lives in one directory (readable by the `netdata` user, which Netdata drops to):

    etc/            user config dir (`-c etc/netdata.conf`, stream.conf, python.d.conf,
                    health_alarm_notify.conf); NETDATA_USER_CONFIG_DIR for plugins
    etc/health.d/   user health config ([directories] health config); stock alarms stay on
    plugins.d/      user plugins dir, the second entry of [directories] plugins. Netdata runs
                    every executable `*.plugin` in it and exports it (with any extra dirs) as
                    NETDATA_USER_PLUGINS_DIRS, space-separated; python.d.plugin then loads
                    user modules from `<each dir>/python.d/<name>.chart.py`
    cache/ lib/ log/ lock/   private, so two instances never share SQLite files
    run/            v2 only: NETDATA_RUN_DIR (else every v2 shares /run/netdata's socket and pipe)

Netdata 1.37 finds things like this (read from its binary, python.d.plugin and alarm-notify.sh):
- `[directories] plugins = "/usr/lib/netdata/plugins.d" "DIR" ...`: entry 1 is the stock dir;
  the others become NETDATA_USER_PLUGINS_DIRS.
- python.d.conf is read from NETDATA_USER_CONFIG_DIR, module configs from its python.d/.
- alarm-notify.sh (`[health] script to execute on alarm`, stock in plugins.d) sources the stock
  then the user health_alarm_notify.conf; the custom method needs `curl` on PATH even though
  a custom_sender() that only writes a file never calls it.
"""

import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

NETDATA_USER = "netdata"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ND2_DIR = os.path.join(os.path.dirname(REPO), "shared", "netdata-v2")  # ../shared beside the checkout


class Agent:
    """What differs between the Netdata agents the tests run."""

    def __init__(self, name, version, binary, plugins_dir, pythond_dir, stock_config_dir, db):
        self.name = name
        self.version = version              # what `netdrops-collector install --netdata-version` takes
        self.binary = binary
        self.plugins_dir = plugins_dir      # the stock plugins.d (alarm-notify.sh, python.d.plugin)
        self.pythond_dir = pythond_dir      # stock python.d modules and python_modules/bases
        self.stock_config_dir = stock_config_dir
        self.db = db                        # [db] keys for a RAM database

    @property
    def is_v2(self):
        return self.version.startswith("2")

    def command(self, config_path, port):
        if self.is_v2:
            # v2 binds where [web] says only if -i comes after -c with the port in it; -p first
            # (read from v2.11's command line handling; otherwise it listens on 19999).
            return [self.binary, "-D", "-p", str(port), "-c", config_path, "-i", "127.0.0.1:{0}".format(port)]
        return [self.binary, "-D", "-c", config_path, "-p", str(port), "-i", "127.0.0.1"]


AGENT_137 = Agent("Netdata 1.37.1 (Debian 12)", "1.37", "/usr/sbin/netdata", "/usr/lib/netdata/plugins.d",
                  "/usr/lib/netdata/python.d", "/usr/lib/netdata/conf.d", {"mode": "ram"})
ND2 = "/opt/nd2"
AGENT_V2 = Agent("Netdata v2.11 (../shared/netdata-v2)", "2.11", ND2 + "/usr/sbin/netdata",
                 ND2 + "/usr/libexec/netdata/plugins.d", ND2 + "/usr/libexec/netdata/python.d",
                 ND2 + "/usr/lib/netdata/conf.d", {"db": "ram"})
NETDATA_BIN = AGENT_137.binary


def install_v2():
    """Unpack ../shared/netdata-v2 into /opt/nd2 (`nd2 install`, a no-op once done). Returns why
    there is no v2 to run (no ../shared beside this checkout), or None; raises if unpacking fails."""
    nd2 = os.path.join(ND2_DIR, "nd2")
    if not os.path.exists(nd2):
        return "no {0}: the Netdata v2.11 tests need ../shared/netdata-v2 beside the checkout".format(ND2_DIR)
    if not os.access(AGENT_V2.binary, os.X_OK):
        done = subprocess.run(["bash", nd2, "install"], capture_output=True, text=True)
        if done.returncode != 0:
            raise NetdataError("nd2 install failed: {0}".format((done.stderr or done.stdout).strip()[-500:]))
    return None
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Fields alarm-notify.sh passes to custom_sender(), in the order written to the capture file.
NOTIFY_FIELDS = ("host", "chart", "name", "status", "old_status", "value", "units", "roles",
                 "family", "info", "when", "src", "alarm_id", "event_id")


class NetdataError(RuntimeError):
    pass


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stock_plugins(agent):
    """Names ('apps', 'python.d', ...) of the external plugins the agent ships."""
    return sorted(name[:-len(".plugin")] for name in os.listdir(agent.plugins_dir)
                  if name.endswith(".plugin"))


def give_to_netdata(path):
    ids = pwd.getpwnam(NETDATA_USER)
    os.chown(path, ids.pw_uid, ids.pw_gid)


def ini(sections):
    """netdata.conf / stream.conf text from {section: {key: value}}."""
    lines = []
    for section, keys in sections.items():
        lines.append("[{0}]".format(section))
        lines.extend("    {0} = {1}".format(k, v) for k, v in keys.items())
        lines.append("")
    return "\n".join(lines)


def notify_conf(capture_path):
    """health_alarm_notify.conf: every notification goes to one custom recipient, whose
    sender appends a tab-separated line (NOTIFY_FIELDS) to capture_path."""
    # ${f//[$tab$nl]/ } keeps every field on one line and free of tabs.
    fields = " ".join('"${%s//[$tab$nl]/ }"' % f for f in NOTIFY_FIELDS)
    return (
        'SEND_EMAIL="NO"\n'
        'SEND_CUSTOM="YES"\n'
        'DEFAULT_RECIPIENT_CUSTOM="capture"\n'
        "custom_sender() {\n"
        "    local tab=$'\\t' nl=$'\\n'\n"
        "    local IFS=$tab v=(%s)\n"
        "    printf '%%s\\n' \"${v[*]}\" >> '%s'\n"
        "}\n" % (fields, capture_path))


class Netdata:
    """A real Netdata daemon on a free loopback port. Configure in __init__, then start()
    (or use it as a context manager); stop() always waits for it to exit.

    plugins_dirs: extra plugin directories (besides this instance's own `plugins_dir`).
    health_dir:   a directory whose *.conf files are copied into the instance's health.d.
    pythond_modules: None = python.d.plugin off; a list = python.d.plugin on, running only
                  these modules (python.d.conf `default_run: no`), to keep it fast.
    netdata_conf: {section: {key: value}} merged over the defaults below.
    stream_conf:  {section: {key: value}} written as stream.conf.
    notify:       capture alarm notifications; read them with notifications().
    agent:        AGENT_137 (default) or AGENT_V2.
    """

    def __init__(self, root, name="netdata", hostname=None, plugins_dirs=(), health_dir=None,
                 pythond_modules=None, netdata_conf=None, stream_conf=None, notify=False,
                 env=None, agent=None):
        self.agent = agent or AGENT_137
        self.name = name
        self.hostname = hostname or name
        self.port = free_port()
        self.root = os.path.join(root, name)
        self.config_dir = os.path.join(self.root, "etc")
        self.health_dir = os.path.join(self.config_dir, "health.d")
        self.plugins_dir = os.path.join(self.root, "plugins.d")
        self.pythond_dir = os.path.join(self.plugins_dir, "python.d")
        self.log_dir = os.path.join(self.root, "log")
        self.lib_dir = os.path.join(self.root, "lib")
        self.cache_dir = os.path.join(self.root, "cache")
        self.run_dir = os.path.join(self.root, "run")
        self.collector_lib_dir = os.path.join(self.root, "netdrops-lib")
        self.notifications_path = os.path.join(self.log_dir, "notifications.tsv")
        self.config_path = os.path.join(self.config_dir, "netdata.conf")
        self.extra_env = dict(env or {})
        self.proc = None
        self.stopped_returncode = None
        self.killed = False  # stop() had to SIGKILL it
        self._make_dirs()
        self._write_config(list(plugins_dirs), pythond_modules, netdata_conf or {})
        if health_dir:
            self.add_health_files(health_dir)
        if stream_conf:
            self.write_config_file("stream.conf", ini(stream_conf))
        if notify:
            self.write_config_file("health_alarm_notify.conf", notify_conf(self.notifications_path))

    # -- preparing -------------------------------------------------------------------------

    def _make_dirs(self):
        os.makedirs(self.root)
        os.chmod(self.root, 0o755)
        for path in (self.config_dir, self.health_dir, self.plugins_dir, self.pythond_dir,
                     self.collector_lib_dir):
            os.makedirs(path, 0o755, exist_ok=True)
        for path in (self.log_dir, self.lib_dir, self.cache_dir, self.run_dir, os.path.join(self.root, "lock")):
            os.makedirs(path, 0o755)
            give_to_netdata(path)
        # No anonymous statistics from tests (checked by the daemon and its scripts).
        open(os.path.join(self.config_dir, ".opt-out-from-anonymous-statistics"), "w").close()

    def _write_config(self, extra_plugins_dirs, pythond_modules, overrides):
        plugins_dirs = [self.agent.plugins_dir, self.plugins_dir] + extra_plugins_dirs
        # Stock external plugins off (python.d only when asked): faster start, quieter log.
        plugins = {name: "no" for name in stock_plugins(self.agent)}
        plugins.update({
            "python.d": "yes" if pythond_modules is not None else "no",
            "apps": "no", "ebpf": "no", "go.d": "no", "cgroups": "no", "tc": "no",
            "statsd": "no", "timex": "no", "idlejitter": "no", "diskspace": "no",
            "enable running new plugins": "yes",
            "check for new plugins every": "2",  # plugins installed after start run soon
        })
        sections = {
            "global": {"run as user": NETDATA_USER, "hostname": self.hostname},
            "db": dict(self.agent.db, **{"update every": "1"}),
            "directories": {
                "config": self.config_dir,
                "health config": self.health_dir,
                "plugins": " ".join('"{0}"'.format(d) for d in plugins_dirs),
                "log": self.log_dir,
                "lib": self.lib_dir,
                "cache": self.cache_dir,
                "lock": os.path.join(self.root, "lock"),
                "home": self.lib_dir,
            },
            "logs": {"access": "none", "debug": "none",
                     "errors to trigger flood protection": "100000"},
            "web": {"bind to": "127.0.0.1:{0}".format(self.port)},
            "ml": {"enabled": "no"},
            "registry": {"enabled": "no"},
            "cloud": {"enabled": "no"},
            "plugins": plugins,
            # Health wakes up every 10 s by default: alarms would lag the test by that much.
            "health": {"enabled": "yes", "run at least every seconds": "1"},
        }
        for section, keys in overrides.items():
            sections.setdefault(section, {}).update(keys)
        self.write_config_file("netdata.conf", ini(sections))
        if pythond_modules is not None:
            self.write_config_file("python.d.conf", "enabled: yes\ndefault_run: no\n" + "".join(
                "{0}: yes\n".format(m) for m in pythond_modules))

    def write_config_file(self, relpath, text):
        path = os.path.join(self.config_dir, relpath)
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def add_health_files(self, source_dir):
        for name in sorted(os.listdir(source_dir)):
            if name.endswith(".conf"):
                shutil.copyfile(os.path.join(source_dir, name), os.path.join(self.health_dir, name))
                os.chmod(os.path.join(self.health_dir, name), 0o644)

    def add_plugin(self, name, text):
        """Write an executable external plugin `<name>.plugin` into plugins_dir."""
        return _write_executable(os.path.join(self.plugins_dir, name + ".plugin"), text)

    def add_pythond_module(self, name, text):
        """Write a python.d module `<name>.chart.py` where python.d.plugin looks for user ones."""
        path = os.path.join(self.pythond_dir, name + ".chart.py")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def install_args(self):
        """Directory options for `netdrops-collector install` into this instance."""
        return ["--plugins-dir", self.plugins_dir, "--pythond-dir", self.pythond_dir,
                "--config-dir", self.config_dir, "--lib-dir", self.collector_lib_dir]

    def install_netdrops(self, mode="plugin", extra_args=()):
        """`netdrops-collector install` into this instance, as a user would run it (naming the
        agent's version: the directories of a test instance do not lead to its binary)."""
        return subprocess.run(["netdrops-collector", "install", "--mode", mode,
                               "--netdata-version", self.agent.version] + self.install_args() + list(extra_args),
                              check=True, capture_output=True, text=True)

    # -- running ---------------------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, timeout=60):
        env = {"PATH": CLEAN_PATH, "DO_NOT_TRACK": "1", "DISABLE_TELEMETRY": "1", "LC_ALL": "C.UTF-8",
               "NETDATA_RUN_DIR": self.run_dir}
        env.update(self.extra_env)
        with open(os.path.join(self.log_dir, "stdout.log"), "ab") as out:
            # Own session: stop() can end every process it spawned, and only those.
            self.proc = subprocess.Popen(
                self.agent.command(self.config_path, self.port),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=self.root, start_new_session=True)
        try:
            self.wait_for(self._answers_info, timeout, what="/api/v1/info")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers_info(self):
        if self.proc.poll() is not None:
            raise NetdataError("netdata exited with {0}:\n{1}".format(
                self.proc.returncode, self.log_text()[-3000:]))
        try:
            info = self.api("/api/v1/info", timeout=2)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        # Ours, not another daemon that grabbed the port we picked.
        return info if info.get("mirrored_hosts", [None])[0] == self.hostname else None

    def stop(self, timeout=30):
        """SIGTERM, wait for the exit (SIGKILL after `timeout`), then end leftover plugins."""
        if self.proc is None:
            return
        self.killed = False
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._end_session(self.proc.pid)
        # 1.37.1 sometimes dies at exit on `Assertion (wu->threads) != NULL` (exit code 1).
        self.stopped_returncode = self.proc.returncode
        self.proc = None

    @staticmethod
    def _end_session(sid, timeout=10):
        # Plugins Netdata left behind (and their children) are still in our session.
        deadline = time.monotonic() + timeout
        while session_pids(sid) and time.monotonic() < deadline:
            try:
                os.killpg(sid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.1)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- asking ----------------------------------------------------------------------------

    @property
    def url(self):
        return "http://127.0.0.1:{0}".format(self.port)

    def api(self, path, params=None, timeout=10):
        """GET url+path(?params), parsed JSON. `path` like /api/v1/charts."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def wait_for(self, predicate, timeout=60, interval=0.5, what="condition"):
        """Poll predicate() until it returns something truthy; return that, or raise."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise NetdataError("{0}: no {1} after {2} s".format(self.name, what, timeout))
            time.sleep(interval)

    def charts(self, host_prefix=""):
        """{chart id: chart} from /api/v1/charts (host_prefix '/host/NAME' for a child)."""
        return self.api(host_prefix + "/api/v1/charts")["charts"]

    def find_charts(self, id_or_context, host_prefix=""):
        return [c for cid, c in self.charts(host_prefix).items()
                if id_or_context in (cid, c.get("context"))]

    def wait_chart(self, id_or_context, timeout=60, host_prefix=""):
        """The first chart whose id or context matches, once Netdata has it."""
        return self.wait_for(lambda: self.find_charts(id_or_context, host_prefix), timeout,
                             what="chart " + id_or_context)[0]

    def alarms(self, host_prefix=""):
        """{alarm key: alarm} of every alarm, whatever its status."""
        # 1.37 wants the bare word: `all=true` is ignored and only raised alarms come back.
        return self.api(host_prefix + "/api/v1/alarms?all")["alarms"]

    def log_text(self, name="error.log"):
        """A log file of this instance (error.log, health.log, stdout.log), '' if none yet."""
        try:
            with open(os.path.join(self.log_dir, name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def notifications(self):
        """Captured alarm notifications, oldest first, as dicts keyed by NOTIFY_FIELDS."""
        try:
            with open(self.notifications_path) as f:
                return [dict(zip(NOTIFY_FIELDS, line.rstrip("\n").split("\t"))) for line in f]
        except FileNotFoundError:
            return []


def session_pids(sid):
    """Live (not zombie) processes in session `sid`, from /proc/PID/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{0}/stat".format(entry)) as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:
            continue  # exited meanwhile
        state, session = fields[0], int(fields[3])
        if session == sid and state not in "ZX":
            pids.append(int(entry))
    return pids


def _write_executable(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


class NetdataFactory:
    """Makes Netdata instances (of one agent, unless told) under one private temp dir; close()
    stops them all."""

    def __init__(self, agent=None):
        self.agent = agent or AGENT_137
        self.root = tempfile.mkdtemp(prefix="netdrops-nd-")
        os.chmod(self.root, 0o755)  # the netdata user must reach the instance dirs
        self.instances = []

    def __call__(self, name="netdata", **kwargs):
        """A configured, not yet started Netdata (see Netdata's arguments)."""
        kwargs.setdefault("agent", self.agent)
        nd = Netdata(self.root, name=name, **kwargs)
        self.instances.append(nd)
        return nd

    def parent_and_child(self, parent_kwargs=None, child_kwargs=None, timeout=90):
        """A started parent and a started child streaming to it (each with its own dirs).
        The child is then reachable through the parent under parent_prefix(child)."""
        key = str(uuid.uuid4())
        parent_kwargs = dict(parent_kwargs or {})
        parent_kwargs.setdefault("stream_conf", {}).setdefault(key, {}).update({
            "type": "api", "enabled": "yes", "allow from": "*",
            "default memory mode": "ram", "health enabled by default": "auto",
            "default postpone alarms on connect seconds": "0",
        })
        parent = self(parent_kwargs.pop("name", "parent"), **parent_kwargs).start()
        child_kwargs = dict(child_kwargs or {})
        child_kwargs.setdefault("stream_conf", {}).setdefault("stream", {}).update({
            "enabled": "yes", "destination": "tcp:127.0.0.1:{0}".format(parent.port),
            "api key": key,
        })
        child = self(child_kwargs.pop("name", "child"), **child_kwargs).start()
        parent.wait_for(lambda: child.hostname in parent.api("/api/v1/info").get(
            "mirrored_hosts", []), timeout, what="child " + child.hostname + " streaming")
        return parent, child

    def close(self):
        for nd in self.instances:
            nd.stop()
        if not os.environ.get("NETDROPS_KEEP_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)


def parent_prefix(child):
    """Path prefix that reaches `child`'s API through its parent."""
    return "/host/{0}".format(child.hostname)
