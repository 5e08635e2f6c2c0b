"""The packages' import structure: the collector never imports the advisor (it runs where the
advisor is not installed, and the advisor imports the collector), and no two modules of either
package import each other, at the top or inside a function."""

import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"netdrops_collector": "collector", "netdrops_advisor": "advisor"}


def package_modules():
    """{dotted module name: source path} of every module of both packages, from the source tree."""
    found = {}
    for package, folder in PACKAGES.items():
        root = os.path.join(REPO, folder)
        for d, _subdirs, names in os.walk(root):
            for name in names:
                if not name.endswith(".py") or "." in name[:-3]:  # netdrops.chart.py is no module
                    continue
                parts = os.path.relpath(os.path.join(d, name), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join([package] + parts)] = os.path.join(d, name)
    return found


def imported_modules(name, source, known, is_package=False):
    """The modules of `known` that the source of module `name` imports, anywhere in it."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    named = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] + ([node.module] if node.module else [])
                module = ".".join(base)
            else:
                module = node.module
            for alias in node.names:  # `from . import x` imports module x when there is one
                full = module + "." + alias.name
                named.add(full if full in known else module)
    found = set()
    for module in named:
        while module and module not in known:  # a.b.C -> a.b
            module = module.rpartition(".")[0]
        if module and module != name:
            found.add(module)
    return found


def import_graph():
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            graph[name] = imported_modules(name, f.read(), modules, path.endswith("__init__.py"))
    return graph


def test_the_import_graph_reader_sees_every_kind_of_import():
    known = {"p", "p.a", "p.b", "p.sub", "p.sub.c", "q"}
    source = ("import q\nfrom . import a\nfrom .b import Thing\nfrom p.sub import c\n"
              "def f():\n    from ..x import y\n    import os\n")
    assert imported_modules("p.sub.c", source, known) == {"q", "p.sub", "p"}
    assert imported_modules("p.sub.d", "from . import c\nfrom .. import a, b\n", known) == {"p.sub.c", "p.a", "p.b"}
    assert imported_modules("p", "from . import a\n", known, is_package=True) == {"p.a"}


def test_the_collector_never_imports_the_advisor():
    graph = import_graph()
    assert "netdrops_advisor.function" in graph  # the advisor's Function is found, and seen
    assert "netdrops_collector.frontends.functions" in graph["netdrops_advisor.function"]
    wrong = sorted((m, d) for m, deps in graph.items() if m.startswith("netdrops_collector")
                   for d in deps if d.startswith("netdrops_advisor"))
    assert wrong == []


def test_no_two_modules_import_each_other():
    graph = import_graph()
    pairs = sorted({tuple(sorted((m, d))) for m, deps in graph.items() for d in deps if m in graph.get(d, ())})
    assert pairs == []


# Run in a fresh interpreter where the advisor cannot be imported: every collector module
# imports, and the plugin ticks, registering no Function (the provider it is given is logged).
WITHOUT_ADVISOR = r'''
import importlib, io, logging, pkgutil, sys

class NoAdvisor:
    def find_spec(self, name, path=None, target=None):
        if name == "netdrops_advisor" or name.startswith("netdrops_advisor."):
            raise ImportError("netdrops_advisor is not installed here (test)")
        return None

sys.meta_path.insert(0, NoAdvisor())
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s: %(message)s")
import netdrops_collector
for module in pkgutil.walk_packages(netdrops_collector.__path__, "netdrops_collector."):
    if not module.name.endswith("__main__"):  # that one runs the command line
        importlib.import_module(module.name)
from netdrops_collector.frontends import functions, plugin
from netdrops_collector.jobs import parse_jobs
name, cfg = parse_jobs(None, 1)[0]
job = plugin.Job(name, cfg)
out = functions.LockedWriter(io.StringIO())
host = functions.attach(job, out, sys.stdin, ["netdrops_advisor.function:provide"])
text = job.tick(1.0) + job.tick(2.0)
assert "BEGIN " in text and "FUNCTION" not in text, text[:300]
assert host.functions == {} and job.announce == ""
assert not [m for m in sys.modules if m.startswith("netdrops_advisor")]
print("ticked", len(text))
'''


def test_the_plugin_ticks_where_the_advisor_is_not_installed(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_ADVISOR], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=str(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ticked ")
    assert "function provider netdrops_advisor.function:provide not loaded: ImportError" in done.stderr


@pytest.mark.parametrize("first", ["netdrops_collector", "netdrops_advisor"])
def test_every_module_imports_in_a_fresh_interpreter_whichever_package_comes_first(first):
    names = sorted(package_modules(), key=lambda m: (not m.startswith(first), m))
    names = [m for m in names if not m.endswith("__main__")]
    script = "import importlib\nfor name in {0!r}:\n    importlib.import_module(name)\n".format(names)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
