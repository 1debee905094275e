"""The package list in pyproject.toml covers every package folder (tasks/ and reports/ mapped in)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_installed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = conf["package-dir"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "vamba_eval").rglob("__init__.py")}
    found |= {"vamba_eval.tasks", "vamba_eval.report_templates"}
    assert found == listed
    assert mapping["vamba_eval.tasks"] == "tasks" and mapping["vamba_eval.report_templates"] == "reports"
    assert (ROOT / "tasks" / "__init__.py").is_file() and (ROOT / "reports" / "__init__.py").is_file()


def test_ci_runs_the_readme_test_command():
    import subprocess

    awk = subprocess.run(["awk", "/<!-- test-command -->/{f=1; next} f && /^```bash/{g=1; next} g && /^```/{exit} g{print}",
                          str(ROOT / "README.md")], capture_output=True, text=True, check=True).stdout.strip()
    assert awk.startswith("pip install") and "pytest" in awk
    assert "README.md" in (ROOT / ".ci" / "run").read_text()
