"""Sphinx extension: the book's API reference, generated at build time from a walk over the ``layerfusion`` package.

``book/api.md`` holds one directive, ``package-api`` (in an ``eval-rst`` block, so its output is parsed as
reStructuredText), naming the package; this extension replaces it by an
``automodule`` block per public module (every module or package whose dotted name has no part starting with ``_``),
grouped into the engine, the study and the study's chapters, alphabetically within a group. A new module therefore
appears in the book without anyone editing ``api.md``. Sphinx's own ``autosummary`` writes one page per module into
the source tree, which the book's table of contents would have to list; this stays one page.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

OPTIONS = (":members:", ":show-inheritance:")


def modules(package: str) -> list[str]:
    """Dotted names of the public modules and subpackages under ``package`` (not ``package`` itself), sorted."""
    root = importlib.import_module(package)
    found = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


def groups(package: str) -> list[tuple[str, list[str]]]:
    """The modules of ``package`` in the page's sections: engine, study, chapters (empty sections dropped)."""
    study, chapters = f"{package}.study", f"{package}.study.chapters"
    names = modules(package)
    sections = [
        ("The engine", [n for n in names if n != study and not n.startswith(f"{study}.")]),
        ("The study", [n for n in names if n == study or (n.startswith(f"{study}.") and n != chapters
                                                          and not n.startswith(f"{chapters}."))]),
        ("The chapters", [n for n in names if n == chapters or n.startswith(f"{chapters}.")]),
    ]
    return [(title, members) for title, members in sections if members]


def rst(package: str) -> list[str]:
    """The reStructuredText the directive stands for: a section per group, a subsection per module.

    A package is documented by what it defines itself (``ignore-module-all``): the names it re-exports from its
    modules are documented there, once.
    """
    lines: list[str] = []
    for title, members in groups(package):
        lines += [title, "=" * len(title), ""]
        for name in members:
            heading = f"``{name}``"
            options = OPTIONS + ((":ignore-module-all:",) if hasattr(importlib.import_module(name), "__path__")
                                 else ())
            lines += [heading, "-" * len(heading), "", f".. automodule:: {name}"]
            lines += [f"   {option}" for option in options] + [""]
    return lines


class PackageAPI(SphinxDirective):
    """``package-api``: the API reference of the package named in the argument (see the module docstring)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        package = self.arguments[0]
        for name in modules(package):
            path = getattr(importlib.import_module(name), "__file__", None)
            if path:
                self.env.note_dependency(path)
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(rst(package), source=f"<package-api {package}>"), container)
        return container.children


def setup(app: Any) -> dict[str, Any]:
    """Register the directive (a Sphinx extension entry point)."""
    app.add_directive("package-api", PackageAPI)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
