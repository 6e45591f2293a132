"""Renders the README's settings tables from the services' settings classes (`make readme`).

`--check` fails when the README's tables differ from what the code declares, so the documented
environment variables can never drift from the real ones.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
SETTINGS_CLASSES = {
    "orchestrator": "adgen_orchestrator.config:OrchestratorSettings",
    "copywriter": "adgen_copywriter.config:CopywriterSettings",
    "diffusion": "adgen_diffusion.config:DiffusionSettings",
    "web": "adgen_web.config:WebSettings",
}


def env_names(settings: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables that set a field, in pydantic-settings' order of precedence."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{settings.model_config.get('env_prefix', '')}{name}".upper()]


def render_default(field: FieldInfo) -> str:
    if field.is_required():
        return "*required*"
    default = field.get_default(call_default_factory=True)
    if hasattr(default, "get_secret_value"):
        default = default.get_secret_value() or ""
    if default is None:
        return "(unset)"
    text = str(default.value if hasattr(default, "value") else default)
    return f"`{text}`" if text != "" else "(empty)"


def render_table(service: str, settings: type[BaseSettings]) -> str:
    rows = [f"**{service}** (`{settings.__module__}.{settings.__name__}`)", "", "| variable | default | meaning |"]
    rows.append("|---|---|---|")
    for name, field in settings.model_fields.items():
        variables = " or ".join(f"`{v}`" for v in env_names(settings, name, field))
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| {variables} | {render_default(field)} | {description} |")
    return "\n".join(rows)


def render_all() -> str:
    tables = []
    for service, path in SETTINGS_CLASSES.items():
        module_name, class_name = path.split(":")
        tables.append(render_table(service, getattr(importlib.import_module(module_name), class_name)))
    return "\n\n".join(tables)


def replace_section(text: str, body: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {BEGIN} … {END} section")
    return pattern.sub(lambda _: f"{BEGIN}\n{body}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README's tables are stale")
    options = parser.parse_args()
    current = README.read_text()
    fresh = replace_section(current, render_all())
    if options.check:
        if fresh != current:
            raise SystemExit("README.md settings tables are stale; run `make readme`")
        print("README.md settings tables match the code")
    else:
        README.write_text(fresh)


if __name__ == "__main__":
    main()
