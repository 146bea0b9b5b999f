"""Every third-party package our code imports is pinned (issue 26): eight (pydantic, the whole schema, among
them) used to arrive only with other packages, at whatever version those allowed.

The imported packages are derived from the code (ast over tasks/ and flows/, every import, also one inside a
function), mapped to their distributions by importlib.metadata; requirements.txt must pin each at the version
installed, and pyproject.toml's dependencies must name the same set, with specifiers the pins satisfy.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import Specifier

REPO = Path(__file__).resolve().parents[2]
OWN = {"tasks", "flows", "__future__"}


def normalise(name: str) -> str:
    """PEP 503: `ruamel.yaml`, `Ruamel_Yaml` and `ruamel-yaml` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(folders: tuple[str, ...] = ("tasks", "flows")) -> set[str]:
    """The top-level third-party modules imported anywhere in `folders`."""
    names: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in OWN}


def imported_distributions() -> dict[str, str]:
    """Distribution (normalised) -> the module that brings it in."""
    known = packages_distributions()
    unknown = sorted(m for m in imported_modules() if m not in known)
    assert not unknown, f"imported, but no installed distribution provides: {unknown}"
    return {normalise(dist): module for module in imported_modules() for dist in known[module]}


def pins() -> dict[str, str]:
    """requirements.txt and requirements-nodeps.txt (installed without their declared requirements):
    distribution (normalised) -> pinned version ("" when unpinned)."""
    out = {}
    lines = [line for name in ("requirements.txt", "requirements-nodeps.txt")
             for line in (REPO / name).read_text(encoding="utf-8").splitlines()]
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pinned = [s.version for s in req.specifier if s.operator == "=="]
            out[normalise(req.name)] = pinned[0] if pinned else ""
    return out


def test_every_imported_package_is_pinned_at_its_installed_version():
    pinned = pins()
    unpinned = sorted(f"{dist} (import {module})" for dist, module in imported_distributions().items()
                      if not pinned.get(dist))
    assert not unpinned, f"requirements.txt (or requirements-nodeps.txt) does not pin: {', '.join(unpinned)}"
    # `==2.13.0` admits a local build such as 2.13.0+cpu, as pip does
    drifted = sorted(f"{dist}: pinned {pinned[dist]}, installed {version(dist)}" for dist in imported_distributions()
                     if not Specifier(f"=={pinned[dist]}").contains(version(dist), prereleases=True))
    assert not drifted


def test_pyproject_dependencies_name_the_imported_packages_and_admit_the_pins():
    declared = [Requirement(r) for r in
                tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]]
    assert {normalise(r.name) for r in declared} == set(imported_distributions())
    pinned = pins()
    refused = [f"{r} refuses the pin {pinned[normalise(r.name)]}" for r in declared
               if not r.specifier.contains(pinned[normalise(r.name)], prereleases=True)]
    assert not refused


def test_the_scan_sees_lazy_imports_and_skips_the_standard_library(tmp_path):
    """The derivation itself: an import inside a function counts, `os` and our own packages do not."""
    assert {"pydantic", "fastapi", "ruamel", "scipy", "annotated_types"} <= imported_modules()
    assert not {"os", "json", "tasks", "flows"} & imported_modules()


def test_every_line_of_the_requirements_is_pinned():
    """Not only what tasks/ and flows/ import: the test runner, the docs and the linters too (pytest was a
    bare name, so a fresh clone got whatever pytest was newest)."""
    unpinned = sorted(dist for dist, pinned in pins().items() if not pinned)
    assert not unpinned, f"requirements.txt (or requirements-nodeps.txt) has no == pin for: {', '.join(unpinned)}"
