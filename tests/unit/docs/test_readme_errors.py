"""The README's error table names every ErrorReason a caller can receive."""

from __future__ import annotations

from pathlib import Path

from adgen.type.v1 import error_reason_pb2

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_error_reason_has_a_row_in_the_readme_error_table() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Errors") : text.index("## Using it")]
    reasons = [value.name.removeprefix("ERROR_REASON_") for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values]
    missing = [r for r in reasons if r != "UNSPECIFIED" and f"`{r}`" not in table]
    assert not missing, f"README error table lacks {missing}"
