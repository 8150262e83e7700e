"""The packages' arrows point one way, read from the code itself (every import, also inside functions).

- ``loadgen``, ``server`` and ``monitor`` never import ``compare``, nor one another's CLI modules;
- no module but ``joulebench/__main__.py`` imports ``joulebench.cli`` (it gathers every package's commands);
- ``joulebench.commands`` (the command plumbing) and ``joulebench.errors`` import none of the packages;
- nothing imports a ``_private`` name from another module of the project.
"""

from __future__ import annotations

import ast
from pathlib import Path

from paths import ROOT

PACKAGES = ("joulebench", "monitor", "server", "loadgen", "compare")
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
                if package in BASE and top == "compare":
                    found.append(f"{at}: {package} must not depend on compare")
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
                for n in names:
                    if n.startswith("_") and not n.startswith("__"):
                        found.append(f"{at}: takes the private name {n}")
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
    }
    for where, what in expected.items():
        assert any(f.startswith(where) and what in f for f in found), (where, what, found)
    assert len(found) == len(expected), found
