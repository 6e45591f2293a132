"""Renders the README's generated tables (`make readme`): the settings of every service, and the memory plans.

`--check` fails when the README's tables differ from what the code declares, so the documented environment
variables and the plan tables can never drift from the real ones. The plan boxes are fixed, so the tables say
what `adgen-diffusion plan --device-memory … --host-memory …` prints on any machine.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

README = Path(__file__).resolve().parent.parent / "README.md"
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
    if isinstance(default, list | tuple):
        default = ",".join(str(item) for item in default)  # As the environment takes a list: comma-separated.
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


def render_settings() -> str:
    tables = []
    for service, path in SETTINGS_CLASSES.items():
        module_name, class_name = path.split(":")
        tables.append(render_table(service, getattr(importlib.import_module(module_name), class_name)))
    return "\n\n".join(tables)


def render_plans() -> str:
    """One table per box: the seed box (a 24 GB L4, 16 GB of host RAM) and an 80 GB card."""
    from adgen_diffusion.planner import GIB, Box, MemoryPlanner
    from adgen_diffusion.registry import ModelRegistry

    boxes = {
        "24 GiB GPU with FP8 compute (L4), 16 GiB host RAM": Box(device_bytes=24 * GIB, host_bytes=16 * GIB),
        "80 GiB GPU (A100/H100 class), 64 GiB host RAM": Box(device_bytes=80 * GIB, host_bytes=64 * GIB),
    }
    sections = []
    for title, box in boxes.items():
        planner = MemoryPlanner(box)
        rows = [
            f"**{title}** (`adgen-diffusion plan --device-memory {box.device_bytes // GIB}GiB "
            f"--host-memory {box.host_bytes // GIB}GiB`)",
            "",
            "| model | fits | plan | peak device | peak host | quality trade |",
            "|---|---|---|---|---|---|",
        ]
        for entry in ModelRegistry.load():
            decision = planner.plan(entry)
            plan = decision.chosen or decision.smallest
            device, host = plan.peak_device_bytes / GIB, plan.peak_host_bytes / GIB
            rows.append(
                f"| `{entry.id}` | {'yes' if decision.fits else '**no**'} | {plan.summary} "
                f"| {device:.1f} GiB | {host:.1f} GiB | {plan.quality_trade} |"
            )
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


# Each generated section: its marker name and what renders it.
SECTIONS: dict[str, Callable[[], str]] = {"settings": render_settings, "plans": render_plans}


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {begin} … {end} section")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README's tables are stale")
    options = parser.parse_args()
    current = README.read_text()
    fresh = current
    for name, render in SECTIONS.items():
        fresh = replace_section(fresh, name, render())
    if options.check:
        if fresh != current:
            raise SystemExit("README.md's generated tables are stale; run `make readme`")
        print("README.md's settings and plan tables match the code")
    else:
        README.write_text(fresh)


if __name__ == "__main__":
    main()
