"""The house's layout: nothing imports the scripts a person runs (hub_scripts/) or the benchmarks, and the
architecture contracts in pyproject.toml (lint-imports) hold."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["hf_interest", "tests", "benchmarks", "hub_scripts"])
def test_nothing_imports_the_scripts_or_the_benchmarks(folder):
    offenders = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = sorted(name for name in _imported_modules(path) if name.split(".")[0] in ("hub_scripts", "benchmarks"))
        if names:
            offenders[str(path.relative_to(ROOT))] = names
    assert not offenders


def test_scripts_and_benchmarks_are_not_packages():
    """Neither ships in the wheel nor can be imported as a package by accident."""
    assert not (ROOT / "hub_scripts" / "__init__.py").exists()
    assert not (ROOT / "benchmarks" / "__init__.py").exists()


def test_architecture_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    run = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_package_of_hf_interest_ships_in_the_wheel():
    """pyproject.toml lists the packages by hand (model_cards/ is mapped in); a package missing there is missing from
    the wheel although an editable install still finds it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "hf_interest").rglob("__init__.py")}
    assert found - listed == set()
    assert "hf_interest.model_cards" in listed and not any(
        name.startswith("hf_interest.hub_scripts") for name in listed
    )
