"""The packages' arrows point one way, read from the code itself (every import, also inside functions).

- ``loadgen``, ``server`` and ``monitor`` never import ``compare`` or ``predict``, nor one another's CLI modules;
- no module but ``joulebench/__main__.py`` imports ``joulebench.cli`` (it gathers every package's commands);
- ``joulebench.commands`` (the command plumbing) and ``joulebench.errors`` import none of the packages;
- nothing imports a ``_private`` name from another module of the project;
- ``estimands`` (the measurement math) imports no other package of the project: it is the floor the others
  stand on;
- no circle: no module reaches itself through the imports of the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

from paths import ROOT

PACKAGES = ("joulebench", "estimands", "monitor", "server", "loadgen", "compare", "predict")
BASE = ("monitor", "server", "loadgen")  # the three that run alone


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import in the file, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            out.append((node.lineno, base, [a.name for a in node.names]))
    return out


def violations(root: Path) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(root, path)
            where = f"{path.relative_to(root)}"
            for line, target, names in imports(path, module):
                top = target.split(".")[0]
                if top not in PACKAGES:
                    continue
                at = f"{where}:{line} imports {target}"
                if package in BASE and top in ("compare", "predict"):
                    found.append(f"{at}: {package} must not depend on {top}")
                if package in BASE and top in BASE and top != package and target.endswith(".cli"):
                    found.append(f"{at}: another package's CLI module")
                if package in BASE and top in BASE and top != package:
                    found += [f"{at}.{n}: another package's CLI module" for n in names if n == "cli"]
                if target == "joulebench.cli" and module != "joulebench.__main__":
                    found.append(f"{at}: only joulebench/__main__.py may import the CLI that gathers the commands")
                if target == "joulebench" and "cli" in names:
                    found.append(f"{at}.cli: only joulebench/__main__.py may import it")
                if module in ("joulebench.commands", "joulebench.errors") and top != "joulebench":
                    found.append(f"{at}: {module} is a leaf and imports no package")
                if package == "estimands" and top != "estimands":
                    found.append(f"{at}: estimands (the measurement math) imports no other package of the project")
                for n in names:
                    if n.startswith("_") and not n.startswith("__"):
                        found.append(f"{at}: takes the private name {n}")
    return found + circles(root)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the project's modules it imports (a ``from package import name`` that names a module counts
    as that module)."""
    modules = {module_name(root, p): p for package in PACKAGES for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for _, target, names in imports(path, module):
            if target.split(".")[0] not in PACKAGES:
                continue
            named = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            targets |= set(named) or ({target} if target in modules else set())
        graph[module] = targets - {module}
    return graph


def circles(root: Path) -> list[str]:
    """One finding per circle of imports (depth-first search; each circle reported once, from its first module)."""
    graph, found, seen = import_graph(root), [], set()

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(module, ())):
            if nxt in path:
                loop = path[path.index(nxt) :]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    found.append("circle: " + " -> ".join([*loop, nxt]))
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def test_the_project_keeps_its_arrows():
    assert violations(ROOT) == []


def test_the_check_finds_each_kind_of_violation(tmp_path):
    """The check above can fail: a tree with one of each violation gives one finding each."""
    files = {
        "joulebench/__init__.py": "",
        "joulebench/cli.py": "from compare import cli\n",
        "joulebench/__main__.py": "from joulebench.cli import main\n",
        "joulebench/commands.py": "from monitor.errors import MonitorError\n",
        "joulebench/errors.py": "",
        "monitor/__init__.py": "",
        "monitor/cli.py": "from joulebench.cli import Command\n",
        "monitor/meter.py": "def f():\n    from compare.report import write_report\n",
        "server/__init__.py": "",
        "server/cli.py": "",
        "server/offline.py": "from .. import loadgen\nfrom loadgen import cli\n",
        "loadgen/__init__.py": "",
        "loadgen/replay.py": "from server.cli import DEFAULT_CACHE\nfrom .summary import _pcts\n",
        "compare/__init__.py": "",
        "compare/sweep.py": "from compare.experiment import _signals_interrupt\n",
        "compare/experiment.py": "from compare.report import write_report\n",
        "compare/report.py": "def f():\n    from compare import experiment\n",
        "estimands/__init__.py": "",
        "estimands/windows.py": "from loadgen.records import read_records\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    expected = {
        "joulebench/commands.py:1": "is a leaf",
        "monitor/cli.py:1": "only joulebench/__main__.py",
        "monitor/meter.py:2": "must not depend on compare",
        "server/offline.py:2": "another package's CLI module",
        "loadgen/replay.py:1": "another package's CLI module",
        "loadgen/replay.py:2": "private name _pcts",
        "compare/sweep.py:1": "private name _signals_interrupt",
        "estimands/windows.py:1": "imports no other package",
        "circle: compare.experiment -> compare.report -> compare.experiment": "",
    }
    for where, what in expected.items():
        assert any(f.startswith(where) and what in f for f in found), (where, what, found)
    assert len(found) == len(expected), found


def test_the_image_carries_every_package():
    """The Dockerfile copies each package pyproject.toml installs (a package left out fails only when a
    container starts: `joulebench` imports every package's commands)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    missing = [p.rstrip("*") for p in include if f"COPY {p.rstrip('*')} {p.rstrip('*')}" not in dockerfile]
    assert missing == [], f"the Dockerfile does not COPY {missing}"
    assert set(PACKAGES) == {p.rstrip("*") for p in include}  # and this test's list is the project's
