"""The README's SDK example is this directory's readme_example.py, and it passes mypy --strict; the
same example with a misspelled option does not, so the typed surface catches what users get wrong."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = Path(__file__).with_name("readme_example.py")


def _sdk_example_in_readme() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)
    (example,) = [block for block in blocks if "create_ad_and_wait(" in block]
    return str(example)


def _mypy_strict(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), str(path)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_the_readme_sdk_example_is_the_checked_example_file() -> None:
    assert _sdk_example_in_readme() == EXAMPLE.read_text(encoding="utf-8")


def test_the_example_passes_mypy_strict_and_a_typo_in_it_does_not(tmp_path: Path) -> None:
    checked = _mypy_strict(EXAMPLE, tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    typo = tmp_path / "typo_example.py"
    typo.write_text(EXAMPLE.read_text(encoding="utf-8").replace("variant_count=2", "variants=2"), encoding="utf-8")
    refused = _mypy_strict(typo, tmp_path / "cache")
    assert refused.returncode == 1 and '"variants"' in refused.stdout
