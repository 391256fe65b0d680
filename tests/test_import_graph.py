# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
The import graph of monai_bigan: no cycle between its subpackages, no private name imported from another module, and
no plotting or scikit-learn import when the package is imported.

The graph is read from the source with :py:mod:`ast`, so it holds every import statement of every module: at module
level, under ``if TYPE_CHECKING:`` and inside functions (a lazy import only hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "monai_bigan"
PACKAGE_DIR = REPO_ROOT / PACKAGE

# imported on first use only: they take seconds to import, and a bundle that never plots should not pay for them
HEAVY_MODULES = ("matplotlib", "sklearn")

Edge = tuple[str, str]  # (node of the importing module, node of the imported module)


def _modules() -> Iterator[tuple[str, Path, bool]]:
    """``(dotted name, path, is_package)`` of every module of the package."""
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), path, is_package


MODULES = {name: path for name, path, _ in _modules()}
PACKAGES = {name for name, _, is_package in _modules() if is_package}


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <node.module> import ...``, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, source: str, is_package: bool = False) -> Iterator[tuple[str, ast.stmt]]:
    """
    The absolute names of the modules imported anywhere in ``source`` (the code of ``module``), with their import
    statement: ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a.b`` when that is a module of the package,
    else ``a``.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, is_package, node)
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                yield (candidate if candidate in MODULES else target), node


def graph_node(module: str) -> str | None:
    """
    The node of the subpackage graph that holds ``module``: ``monai_bigan.<x>`` for every module in or under
    ``monai_bigan.<x>`` (a subpackage or a top-level module such as ``monai_bigan.exceptions``), ``monai_bigan`` for
    the package itself; None outside the package.
    """
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return ".".join(parts[:2])


def subpackage_graph() -> dict[Edge, list[str]]:
    """Every edge between two nodes of the subpackage graph, with the import sites (``path:line``) behind it."""
    edges: dict[Edge, list[str]] = defaultdict(list)
    for name, path, is_package in _modules():
        source_node = str(graph_node(name))
        for target, stmt in imported_modules(name, path.read_text(encoding="utf-8"), is_package):
            target_node = graph_node(target)
            site = f"{path.relative_to(REPO_ROOT)}:{stmt.lineno}"
            if target_node is not None and target_node != source_node and site not in edges[(source_node, target_node)]:
                edges[(source_node, target_node)].append(site)
    return dict(edges)


def strongly_connected_components(edges: dict[Edge, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm), each sorted."""
    successors: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        successors[a].add(b)
        successors[b]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(successors[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(successors):
        if v not in index:
            visit(v)
    return components


def test_resolves_relative_and_lazy_imports():
    source = textwrap.dedent("""
        from . import calibration
        from ..utils import as_bool
        from .. import io, __version__

        def f():
            from monai_bigan.engines import trainer
            import monai_bigan.io.atomic
    """)
    found = {name for name, _ in imported_modules("monai_bigan.handlers.checkpoint", source)}
    assert found == {
        "monai_bigan.handlers.calibration",
        "monai_bigan.utils",
        "monai_bigan.io",
        "monai_bigan",
        "monai_bigan.engines.trainer",
        "monai_bigan.io.atomic",
    }
    in_package = {name for name, _ in imported_modules("monai_bigan.data", "from .datalist import x", is_package=True)}
    assert in_package == {"monai_bigan.data.datalist"}


def test_graph_sees_the_package():
    edges = subpackage_graph()
    # a few edges the package cannot do without, so that an empty graph does not pass as acyclic
    for edge in [
        ("monai_bigan.engines", "monai_bigan.networks"),
        ("monai_bigan.inferers", "monai_bigan.networks"),
        ("monai_bigan.baselines", "monai_bigan.inferers"),
        ("monai_bigan.handlers", "monai_bigan.exceptions"),
    ]:
        assert edge in edges, edge
    # the package imports its subpackages; none of them may import the package itself back
    assert ("monai_bigan", "monai_bigan.engines") in edges


def test_no_import_cycle_between_subpackages():
    edges = subpackage_graph()
    components = strongly_connected_components(edges)
    lines = []
    for component in components:
        lines.append(" <-> ".join(component) + ":")
        for (a, b), sites in sorted(edges.items()):
            if a in component and b in component:
                lines.append(f"    {a} -> {b}: {', '.join(sites)}")
    assert not components, "import cycles between subpackages of monai_bigan:\n" + "\n".join(lines)


def test_no_private_name_imported_from_another_module():
    offenders = []
    for name, path, is_package in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve_from(name, is_package, node)
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                modules = [target]
            elif isinstance(node, ast.Import):
                private, modules = [], [a.name for a in node.names]
            else:
                continue
            # private modules of the package (``monai_bigan.x._y``) count as well
            private += [
                m
                for m in modules
                if graph_node(m) is not None and any(p.startswith("_") and not p.endswith("__") for p in m.split("."))
            ]
            if private:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {', '.join(private)}")
    assert not offenders, "private names imported from another module:\n" + "\n".join(offenders)


_IMPORT_SCRIPT = """
import json
import sys

BLOCKED = tuple(sys.argv[1].split(","))
attempts = []
phase = "monai"


class Blocker:
    # every import of a blocked module fails, so none of them gets into sys.modules and each attempt is seen
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append([phase, name])
            raise ModuleNotFoundError(f"{name} is blocked by the test", name=name)
        return None


sys.meta_path.insert(0, Blocker())
import monai  # MONAI imports some of them itself, optionally: not monai_bigan's doing

phase = "monai_bigan"
import monai_bigan
import monai_bigan.baselines.pca
import monai_bigan.metrics.anomaly
import monai_bigan.metrics.plots
import monai_bigan.visualize.review_sheet

loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"attempts": attempts, "loaded": loaded}))
"""


def test_import_does_not_load_matplotlib_or_sklearn():
    """``import monai_bigan`` works without them, and never tries to import them."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, ",".join(HEAVY_MODULES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"import monai_bigan failed with {HEAVY_MODULES} unavailable:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    by_package = [name for phase, name in result["attempts"] if phase == "monai_bigan"]
    assert by_package == [], f"importing monai_bigan tried to import {by_package}"
