"""Shared fixtures: the drop lab (real kernel drops) and real Netdata daemons.

Tests that use drop_lab / drop_lab_factory are marked `lab` and `root`, tests that use
netdata_factory are marked `netdata`, whether or not they say so themselves.
Nothing here is skipped in CI (CI=true): a missing prerequisite fails the test there.
"""

import os
import shutil
import signal
import subprocess

import pytest

from lab import DropLab, RPS_TARGET_CPU
from netdatad import AGENT_V2, NETDATA_BIN, NetdataFactory, install_v2

LAB_FIXTURES = {"drop_lab", "drop_lab_factory"}
NETDATA_FIXTURES = {"netdata_factory", "netdata_v2_factory"}


def _interrupt(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    # A SIGTERM (CI timeout, kill) would end pytest without teardown, leaving namespaces,
    # sysctls and Netdata daemons behind. Like Ctrl-C, it now stops the run after teardown.
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(item.fixturenames)
        if used & LAB_FIXTURES:
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.root)
        if used & NETDATA_FIXTURES:
            item.add_marker(pytest.mark.netdata)


def unavailable(reason):
    """Skip on a developer machine that cannot run the test; fail in CI, which must run it."""
    if os.environ.get("CI") == "true":
        pytest.fail("CI cannot run this test: " + reason)
    pytest.skip(reason)


def require_lab():
    if os.geteuid() != 0:
        unavailable("needs root (namespaces, sysctls)")
    if RPS_TARGET_CPU not in os.sched_getaffinity(0) and os.cpu_count() <= RPS_TARGET_CPU:
        unavailable("needs a CPU {0} to steer RPS to".format(RPS_TARGET_CPU))
    for tool in ("ip", "taskset"):
        if not shutil.which(tool):
            unavailable("needs {0} (iproute2, util-linux)".format(tool))


@pytest.fixture
def requires_root():
    if os.geteuid() != 0:
        unavailable("needs root")


@pytest.fixture
def tracefs_mounted():
    """tracefs at /sys/kernel/tracing (drop reasons need it): mounted for the test when it is
    not, and unmounted after, so the machine is left as found."""
    if os.geteuid() != 0:
        unavailable("needs root (tracefs)")
    from netdrops_collector.kernel import tracefs
    mounted_here = tracefs.find_root() is None
    if mounted_here:
        subprocess.run(["mount", "-t", "tracefs", "nodev", tracefs.DEFAULT_MOUNT], check=True)
    yield tracefs.find_root()
    if mounted_here:
        subprocess.run(["umount", tracefs.DEFAULT_MOUNT], check=False)


@pytest.fixture
def drop_lab():
    """An entered DropLab (namespace + veth + RPS to CPU 1); cleaned up and restored after."""
    require_lab()
    with DropLab() as lab:
        yield lab


@pytest.fixture
def drop_lab_factory():
    """drop_lab_factory(**DropLab kwargs) -> another entered lab, for tests that need several."""
    require_lab()
    labs = []

    def make(**kwargs):
        lab = DropLab(**kwargs)
        lab.__enter__()
        labs.append(lab)
        return lab

    yield make
    for lab in reversed(labs):
        lab.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "report_" + report.when, report)


def _factory(request, agent=None):
    factory = NetdataFactory(agent)
    yield factory
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        for nd in factory.instances:
            for log in ("error.log", "daemon.log", "collector.log"):
                text = nd.log_text(log)
                if text:
                    print("---- {0}: end of {1} ----".format(nd.name, log))
                    print(text[-4000:])
    factory.close()


@pytest.fixture
def netdata_factory(request):
    """netdata_factory(name, **Netdata kwargs) -> a configured Netdata 1.37; call .start().
    Also .parent_and_child(). Every instance is stopped afterwards; on failure the end of
    each instance's logs is printed into the report."""
    if not os.access(NETDATA_BIN, os.X_OK):
        unavailable("needs Debian's netdata ({0})".format(NETDATA_BIN))
    if os.geteuid() != 0:
        unavailable("needs root (Netdata drops privileges to user netdata)")
    yield from _factory(request)


@pytest.fixture
def netdata_v2_factory(request):
    """The same for the real Netdata v2.11 of ../shared/netdata-v2 (unpacked on first use). A
    checkout without ../shared skips these tests, even in CI (which always has it)."""
    if os.geteuid() != 0:
        unavailable("needs root (Netdata drops privileges to user netdata)")
    why = install_v2()
    if why is not None:
        pytest.skip(why)
    yield from _factory(request, AGENT_V2)
