"""The package's import graph, read from the source (ast): no cycles, engine never imports the study, and every
third-party import of the engine is a declared core dependency (the study's may use the ``study`` extra).

Every ``import`` statement counts, at module level or inside a function, so a function-level import cannot hide a
cycle; only imports under ``if TYPE_CHECKING:`` (never executed) are left out. Importing ``a.b.c`` also imports the
packages ``a.b`` and ``a``, so those count as edges too (except a module's own packages, which are imported before
it runs).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
PKG = LIB / "layerfusion"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names imported anywhere in ``tree`` (skipping ``if TYPE_CHECKING:`` bodies)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.append(prefix)
            found.extend(f"{prefix}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between layerfusion modules, third-party top-level names imported) per module."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    external: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imports(tree, module, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top != "layerfusion":
                if top and top not in sys.stdlib_module_names and top != "__future__":
                    external[module].add(top)
                continue
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # the module and every package above it
                target = ".".join(parts[:k])
                # a module's own packages are imported before it runs, so they are no edge of it
                if target in MODULES and target != module and not module.startswith(target + "."):
                    edges[module].add(target)
    return edges, external


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt == "layerfusion":  # the package's __init__ imports nothing of its own (lazy submodules)
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def _is_study(module: str) -> bool:
    return module == "layerfusion.study" or module.startswith("layerfusion.study.")


def test_the_top_level_package_imports_nothing_of_its_own():
    edges, _ = _graph()
    assert edges["layerfusion"] == set()


def test_import_graph_is_acyclic():
    edges, _ = _graph()
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_engine_never_imports_the_study():
    edges, _ = _graph()
    bad = {m: sorted(t for t in targets if _is_study(t)) for m, targets in edges.items() if not _is_study(m)}
    assert not {m: t for m, t in bad.items() if t}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


# The import name of a distribution where the two differ.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "huggingface-hub": "huggingface_hub",
                "myst-nb": "myst_nb", "jupyter-client": "jupyter_client", "ipython": "IPython"}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    def to_import(names: set[str]) -> set[str]:
        return {IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names}
    extras = {k: to_import(_requirement_names(v)) for k, v in project.get("optional-dependencies", {}).items()}
    return to_import(_requirement_names(project["dependencies"])), extras


def test_engine_imports_only_core_dependencies_or_guarded_extras():
    """With the ``study`` extra absent every engine module still imports: the engine's third-party imports are core
    dependencies, or belong to an extra the engine loads only inside the function that needs it (gguf, ray)."""
    core, extras = _declared()
    _, external = _graph()
    optional = extras.get("gguf", set()) | extras.get("distributed", set()) | {"ray"}
    for module, names in external.items():
        if _is_study(module):
            continue
        undeclared = names - core - optional
        assert not undeclared, f"{module} imports {sorted(undeclared)}, which are not core dependencies"


def test_study_imports_are_declared():
    core, extras = _declared()
    _, external = _graph()
    allowed = core | extras.get("study", set()) | extras.get("distributed", set()) | {"ray"}
    for module, names in external.items():
        if _is_study(module):
            assert not names - allowed, f"{module} imports {sorted(names - allowed)}; declare them in pyproject"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is_study(m)))
def test_engine_module_imports_without_warnings(module):
    """Each engine module imports in a fresh interpreter with warnings as errors (an invalid escape sequence in a
    docstring is a SyntaxWarning on Python 3.12)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-W", "error::SyntaxWarning", "-W", "error::DeprecationWarning:layerfusion",
                           "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": f"{LIB}:{ROOT}"}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_sources_compile_without_syntax_warnings():
    import warnings

    for path in MODULES.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(encoding="utf-8"), str(path), "exec")


def test_one_version_source():
    """pyproject reads its version from ``layerfusion.__version__``; records (cache runs, results) use the same."""
    import layerfusion
    from layerfusion import provenance

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "layerfusion.__version__"}
    assert provenance.versions()["layerfusion"] == layerfusion.__version__


def test_engine_knows_no_workspace():
    """No checkout paths in the engine: the study passes its data and results locations in."""
    for module, path in MODULES.items():
        if _is_study(module):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("shared/data", "repo_root", "book/executed", "layerfusion report", '"results"'):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle!r}"
