"""The layer rules hold, and the checker that enforces them really fails when one is broken."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Dagster internals (no public equivalent in 1.13): the instance plug-ins, and the per-phase pool
# slots, which use the step's concurrency context (docs/architecture.md).
PRIVATE_DAGSTER_ALLOWED = ("cosmic_dagster/instance/", "cosmic_dagster/defs/pools.py")


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / ".importlinter"), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_rules_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_domain_module_importing_dagster_breaks_the_rules(tmp_path):
    shutil.copytree(
        ROOT / "cosmic_dagster", tmp_path / "cosmic_dagster", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "cosmic_dagster/domain/_throwaway.py").write_text("import dagster\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "import no Dagster BROKEN" in result.stdout
    assert "cosmic_dagster.domain._throwaway -> dagster" in result.stdout


def test_an_emulator_importing_an_adapter_breaks_the_rules(tmp_path):
    shutil.copytree(
        ROOT / "cosmic_dagster", tmp_path / "cosmic_dagster", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "cosmic_dagster/emulators/_throwaway.py").write_text(
        "from cosmic_dagster.transfer.globus import transfer\n"
    )
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert (
        "Emulators import no adapter, pipeline or Dagster code (they judge the adapters) BROKEN"
        in result.stdout
    )


def _private_dagster_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dagster._"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dagster._")]
    return found


def test_dagster_internals_only_where_no_public_api_exists():
    offenders = {
        str(path.relative_to(ROOT)): modules
        for path in sorted((ROOT / "cosmic_dagster").rglob("*.py"))
        if not str(path.relative_to(ROOT)).startswith(PRIVATE_DAGSTER_ALLOWED)
        and (modules := _private_dagster_imports(path))
    }
    assert offenders == {}
