"""Netdata Functions in the external plugin: the plugins.d machinery that receives calls on
stdin, runs each on a thread of its own and writes its one answer. What a Function computes is
its provider's: a provider is a callable `provide(host, job)` that registers Functions on the
FunctionHost (and may observe the job's ticks with job.add_tick_observer). The plugin's main()
is given its providers (the installed launcher names them, `netdrops-collector plugin` reads the
PROVIDER_GROUP entry points); the collector names none itself and loads what it is given.

plugins.d protocol (read from Netdata's source, 1.37 and v2, and checked against a running
1.37.1 and v2.11.0-90 with a plugin that logged every byte it received):

    plugin -> Netdata   FUNCTION GLOBAL "<name>" <timeout> "help text"
    Netdata -> plugin   (on stdin)
        1.37            FUNCTION <transaction> <timeout> "<name> <params>"
        v2              FUNCTION <transaction> <timeout> "<name> <params>" "0x<access>" "<source>"
        v2, POST body   FUNCTION_PAYLOAD <transaction> <timeout> "<name> <params>" "0x<access>"
                            "<source>" "<content type>"
                        <body lines>
                        FUNCTION_PAYLOAD_END
        v2              FUNCTION_CANCEL <transaction>     (the HTTP client went away, or, sent with
                                                           the next call, the call timed out)
        v2              FUNCTION_PROGRESS <transaction>   (the caller is still waiting)
        v2              QUIT                              (no newline; then it closes our pipes)
    plugin -> Netdata   FUNCTION_RESULT_BEGIN <transaction> <status> <content type> <expires>
                        <body lines>
                        FUNCTION_RESULT_END

1.37 rewrites the call's text before it arrives (`=` and `;` become `:`, quotes `_`); v2.11
passes `window=30` as it is: handlers read parameters in both spellings. Netdata gives every
plugin a pipe on stdin for the plugin's whole life and closes it when it is done with the plugin.

Each call runs on a thread of its own, so a call never delays a collection nor the reading of a
FUNCTION_CANCEL. A handler takes the Call (params, payload, content_type, and a `cancelled`
event it may check) and returns (status, content type, body) or raises CallError.
"""

import importlib
import json
import logging
import os
import shlex
import signal
import stat
import threading
import time

log = logging.getLogger("netdrops")

DEFAULT_TIMEOUT = 10    # seconds, when a FUNCTION line carries no usable timeout
CANCELLED = 499         # the status Netdata v2 gives a cancelled call ("client closed request")
MAX_CALLS = 8           # calls running at once; more are answered 503 at once
# Keywords Netdata sends on our stdin (plugins.d's PLUGINSD_CALL_*).
CALL, PAYLOAD_BEGIN, PAYLOAD_END = "FUNCTION", "FUNCTION_PAYLOAD", "FUNCTION_PAYLOAD_END"
CANCEL, PROGRESS, QUIT = "FUNCTION_CANCEL", "FUNCTION_PROGRESS", "QUIT"
# Fault injection for tests only: when this variable is set (never by Netdata, never by the
# installer), every call waits that many seconds, cancellably, before its handler runs. It is how
# the tests make a call that is still running when Netdata cancels it.
FAULT_DELAY_ENV = "NETDROPS_FAULT_FUNCTION_DELAY"
# The entry point group through which `netdrops-collector plugin` finds the installed providers
# (setup.cfg); the installed netdrops.plugin launcher names its providers itself.
PROVIDER_GROUP = "netdrops.functions"


class CallError(Exception):
    """A handler's refusal: answered with `status` and Netdata's error shape."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


class Call:
    """One call from Netdata: a FUNCTION line, or a FUNCTION_PAYLOAD block with its body."""
    __slots__ = ("transaction", "timeout", "name", "params", "payload", "content_type", "received",
                 "cancelled")

    def __init__(self, transaction, timeout, name, params, payload=None, content_type=None, received=None):
        self.transaction = transaction
        self.timeout = timeout
        self.name = name
        self.params = params
        self.payload = payload            # the POST body (text), None for a GET
        self.content_type = content_type
        self.received = time.monotonic() if received is None else received
        self.cancelled = threading.Event()  # set when Netdata cancels: a long handler may stop

    @property
    def deadline(self):
        """When Netdata stops waiting: it has answered the caller itself (504) by then."""
        return self.received + self.timeout


def parse_call(line):
    """'FUNCTION <transaction> <timeout> "<name params>" [access source]' or the same after
    FUNCTION_PAYLOAD (+ content type) -> Call (without payload), or None if malformed."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 4 or words[0] not in (CALL, PAYLOAD_BEGIN):
        return None
    call = words[3].split()
    if not call:
        return None
    try:
        timeout = max(1, int(words[2]))
    except ValueError:
        timeout = DEFAULT_TIMEOUT
    content_type = words[6] if words[0] == PAYLOAD_BEGIN and len(words) > 6 else None
    return Call(words[1], timeout, call[0], call[1:], content_type=content_type)


class CommandReader:
    """Netdata's lines on our stdin -> commands: ("call", Call), ("cancel", transaction),
    ("progress", transaction), ("quit", None), ("malformed", line); None while a POST body is
    being read and for lines that are not for us. Parsing only: no I/O, no clock but the Call's."""

    def __init__(self):
        self.pending = None      # the Call whose FUNCTION_PAYLOAD body is being read
        self.body = []

    def feed(self, line):
        if self.pending is not None:
            if line.rstrip("\r") != PAYLOAD_END:
                self.body.append(line)
                return None
            call, self.pending = self.pending, None
            call.payload, self.body = "\n".join(self.body), []
            return ("call", call)
        keyword = line.split(None, 1)[0] if line.strip() else ""
        if keyword in (CALL, PAYLOAD_BEGIN):
            call = parse_call(line)
            if call is None:
                return ("malformed", line)
            if keyword == PAYLOAD_BEGIN:
                self.pending = call
                return None
            return ("call", call)
        if keyword in (CANCEL, PROGRESS):
            words = line.split()
            if len(words) < 2:
                return ("malformed", line)
            return ("cancel" if keyword == CANCEL else "progress", words[1])
        if keyword == QUIT:
            return ("quit", None)
        return None


def payload_params(payload, content_type, names):
    """A handler's parameters (`names`) from a POST body (v2's dashboard sends JSON: {"selections": {"window":
    ["60"]}, ...}; top-level keys are taken too) -> ["window:60", ...]; CallError(400)."""
    if not payload or not payload.strip():
        return []
    if content_type and "json" not in content_type:
        raise CallError(400, "the body must be JSON (it was {0})".format(content_type))
    try:
        doc = json.loads(payload)
    except ValueError as error:
        raise CallError(400, "the body is not JSON: {0}".format(error))
    if not isinstance(doc, dict):
        raise CallError(400, "the body must be a JSON object")
    selections = doc.get("selections")
    merged = dict(doc)
    if isinstance(selections, dict):
        merged.update(selections)
    params = []
    for key in names:
        value = merged.get(key)
        if value is None:
            continue
        if isinstance(value, list) and len(value) == 1:  # a selection: ["60"]
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise CallError(400, "{0} must be one value".format(key))
        params.append("{0}:{1}".format(key, value))
    return params


def result(transaction, status, content_type, body, expires):
    body = body if body.endswith("\n") else body + "\n"
    return "FUNCTION_RESULT_BEGIN {0} {1} {2} {3}\n{4}FUNCTION_RESULT_END\n".format(
        transaction, status, content_type, int(expires), body)


def error_body(status, message):
    # Netdata's own error shape: 1.37 wrote "error_message"; v2.11 writes "errorMessage" (seen in
    # its 504 answers) and its dashboard reads that. Both, for both.
    return json.dumps({"status": status, "errorMessage": message, "error_message": message})


class Function:
    """One registered Function: what FUNCTION GLOBAL announces, and its handler."""
    __slots__ = ("name", "timeout", "help", "handler")

    def __init__(self, name, timeout, help, handler):
        self.name = name
        self.timeout = timeout
        self.help = help
        self.handler = handler


class FunctionHost:
    """The plugin's Functions, by name: registration lines, and one answer per Call. An answer
    expires after `update_every` seconds (what a Function answers comes from the latest ticks)."""

    def __init__(self, update_every):
        self.update_every = update_every
        self.functions = {}

    def register(self, name, timeout, help, handler):
        """handler(call) -> (status, content type, body), or raises CallError(status, message)."""
        if not name or any(c.isspace() or c == '"' for c in name) or '"' in help:
            raise ValueError("a Function name is one word and its help has no double quote: {0!r}".format(name))
        self.functions[name] = Function(name, timeout, help, handler)

    def registration(self):
        """The lines that register every Function (host-wide: GLOBAL, no chart needed)."""
        return "".join('FUNCTION GLOBAL "{0}" {1} "{2}"\n'.format(f.name, f.timeout, f.help)
                       for f in self.functions.values())

    def answer(self, call):
        """One Call -> the FUNCTION_RESULT block to write."""
        expires = time.time() + self.update_every
        function = self.functions.get(call.name)
        if function is None:
            return result(call.transaction, 404, "application/json",
                          error_body(404, "netdrops.plugin has no function {0!r}".format(call.name)), expires)
        try:
            status, content_type, body = function.handler(call)
        except CallError as error:
            status, content_type, body = error.status, "application/json", error_body(error.status, str(error))
        except Exception as error:  # a handler's bug: one line in Netdata's log, and an answer
            log.error("function %s failed: %s: %s", call.name, type(error).__name__, error)
            status, content_type = 500, "application/json"
            body = error_body(500, "{0} failed: {1}: {2}".format(call.name, type(error).__name__, error))
        return result(call.transaction, status, content_type, body, expires)


# -- the plugin's stdin and stdout -------------------------------------------------------------

class LockedWriter:
    """The plugin's stdout, shared by the main loop and the Function threads: each write() is one
    complete piece of protocol, never interleaved with another."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, text):
        with self.lock:
            self.stream.write(text)

    def flush(self):
        with self.lock:
            self.stream.flush()

    def write_and_flush(self, text):
        with self.lock:
            self.stream.write(text)
            self.stream.flush()


class InFlight:
    """A call being computed: whoever answers first (the worker, or a cancel) writes the one
    answer Netdata gets for the transaction."""
    __slots__ = ("call", "answered")

    def __init__(self, call):
        self.call = call
        self.answered = False


class Dispatcher:
    """Runs each call on its own thread and writes its answer once; answers a cancelled call at
    once with CANCELLED. Seen on v2.11: Netdata sends FUNCTION_CANCEL when the HTTP client goes
    away (the transaction is still waiting there for our answer, which frees it) and, for a call
    that timed out, when the next call arrives (it has answered 504 and forgotten the transaction:
    an answer then is logged as 'transaction is not found')."""

    def __init__(self, host, out, delay=0.0, max_calls=MAX_CALLS, clock=time.monotonic):
        self.host = host
        self.out = out
        self.delay = delay          # FAULT_DELAY_ENV, for tests only
        self.max_calls = max_calls
        self.clock = clock
        self.lock = threading.Lock()
        self.inflight = {}          # transaction -> InFlight

    def start(self, call):
        with self.lock:
            busy = len(self.inflight) >= self.max_calls
            duplicate = call.transaction in self.inflight
            if not busy and not duplicate:
                entry = self.inflight[call.transaction] = InFlight(call)
        if duplicate:
            return  # Netdata never sends one transaction twice; the first call answers it
        if busy:
            self.write(result(call.transaction, 503, "application/json", error_body(
                503, "netdrops.plugin is already answering {0} calls".format(self.max_calls)), time.time()))
            return
        threading.Thread(target=self._work, args=(entry,), name="netdrops-call", daemon=True).start()

    def _work(self, entry):
        answer = None
        try:
            if self.delay and entry.call.cancelled.wait(self.delay):
                return
            answer = self.host.answer(entry.call)
        finally:
            self._finish(entry, answer)

    def _finish(self, entry, answer):
        with self.lock:
            self.inflight.pop(entry.call.transaction, None)
            first, entry.answered = not entry.answered, True
        if not first or answer is None:
            return
        if self.clock() > entry.call.deadline:
            log.warning("function %s: a call took longer than Netdata waits (%d s): its answer is dropped",
                        entry.call.name, entry.call.timeout)
            return
        self.write(answer)

    def cancel(self, transaction):
        with self.lock:
            entry = self.inflight.pop(transaction, None)
            if entry is None or entry.answered:
                return  # answered already, or not ours
            entry.answered = True
        entry.call.cancelled.set()
        if self.clock() <= entry.call.deadline:
            self.write(result(transaction, CANCELLED, "application/json",
                              error_body(CANCELLED, "the call was cancelled"), time.time()))

    def write(self, text):
        try:
            self.out.write_and_flush(text)
        except (BrokenPipeError, ValueError, OSError):
            pass  # stdout is gone: the main loop sees it too and exits


def stdin_is_netdatas(stdin, environ=None):
    """Netdata starts plugins with a pipe on stdin that it keeps open while it runs them; EOF
    there means Netdata is done with us. Run by hand (a terminal, /dev/null) EOF means nothing."""
    env = os.environ if environ is None else environ
    try:
        return stat.S_ISFIFO(os.fstat(stdin.fileno()).st_mode) and "NETDATA_PLUGINS_DIR" in env
    except (OSError, ValueError, AttributeError):
        return False


def read_lines(fd):
    """Lines from a file descriptor, read unbuffered: a daemon thread blocked inside sys.stdin's
    buffered reader would hold its lock and abort the interpreter at exit. v2 sends QUIT without
    a newline (seen on v2.11): a pending `QUIT` is a line of its own."""
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            if pending:
                yield pending.decode("utf-8", "replace")
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if pending == QUIT.encode():
            lines.append(pending)
            pending = b""
        for line in lines:
            yield line.decode("utf-8", "replace")


def serve_stdin(dispatcher, fd, on_quit, on_eof):
    """The reader thread: start every call, cancel what Netdata cancels; on_quit() at QUIT,
    on_eof() at the end of stdin."""
    reader = CommandReader()
    for line in read_lines(fd):
        command = reader.feed(line)
        if command is None:
            continue
        kind, value = command
        if kind == "call":
            dispatcher.start(value)
        elif kind == "cancel":
            dispatcher.cancel(value)
        elif kind == "quit":
            on_quit()
            return
        elif kind == "malformed":
            log.error("ignoring a malformed line on stdin: %.200s", line.strip())
        # "progress": the caller is still waiting; our calls take milliseconds, nothing to report
    on_eof()


def fault_delay(environ=None):
    """FAULT_DELAY_ENV in seconds, 0 when unset (always, outside the tests)."""
    value = (os.environ if environ is None else environ).get(FAULT_DELAY_ENV)
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        log.error("%s=%r is not a number of seconds: ignored", FAULT_DELAY_ENV, value)
        return 0.0


def load_provider(spec):
    """A provider from 'module:callable' (an entry point's value), or None, logged, when it
    cannot be loaded: the plugin then collects without that provider's Functions."""
    module, _, attr = spec.partition(":")
    try:
        provider = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            provider = getattr(provider, part)
    except Exception as error:  # ImportError, or any error of the module's own import
        log.error("function provider %s not loaded: %s: %s", spec, type(error).__name__, error)
        return None
    if not callable(provider):
        log.error("function provider %s is not callable", spec)
        return None
    return provider


def installed_providers():
    """The specs ('module:callable') of the providers installed with an entry point in
    PROVIDER_GROUP, each once, in name order. [] where there is no metadata (a copy of the
    package, as Netdata runs it) or it cannot be read."""
    try:
        from importlib import metadata
        points = metadata.entry_points()
    except Exception as error:  # a broken distribution's metadata must not stop the plugin
        log.error("reading the installed function providers failed: %s: %s", type(error).__name__, error)
        return []
    if hasattr(points, "select"):  # Python 3.10+
        group = points.select(group=PROVIDER_GROUP)
    else:                          # Python 3.9: {group: [EntryPoint]}
        group = points.get(PROVIDER_GROUP, ())
    found = {}
    for point in group:  # the same distribution seen twice on sys.path names its provider once
        found.setdefault(point.value, point.name)
    return sorted(found, key=lambda value: (found[value], value))


def attach(job, out, stdin, providers=()):
    """Give a plugin job the Functions of its providers (callables, or 'module:callable' specs):
    the job announces them with its first charts and a thread reads the calls arriving on stdin.
    With no provider (or none that registers anything) nothing is announced."""
    host = FunctionHost(job.cfg["update_every"])
    for provider in providers:
        if not callable(provider):
            provider = load_provider(provider)
        if provider is None:
            continue
        try:
            provider(host, job)
        except Exception as error:  # its Functions are lost, not the collection
            log.error("function provider %r failed: %s: %s", provider, type(error).__name__, error)
    dispatcher = Dispatcher(host, out, delay=fault_delay())
    netdata_stdin = stdin_is_netdatas(stdin)

    def exit_now():
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread's handler exits 0

    def on_quit():
        log.info("Netdata sent QUIT: exiting")
        exit_now()

    def on_eof():
        if netdata_stdin:
            log.info("Netdata closed our stdin: exiting")
            exit_now()

    try:
        fd = stdin.fileno()
    except (AttributeError, ValueError, OSError):
        fd = None  # no stdin at all: nobody can call
    if fd is not None:
        threading.Thread(target=serve_stdin, args=(dispatcher, fd, on_quit, on_eof),
                         name="netdrops-functions", daemon=True).start()
    if host.functions and fd is not None:
        job.announce = host.registration()
    return host
