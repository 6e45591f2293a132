"""Renders the README's memory-plan tables from the planner (`make readme`); `--check` fails when they drift.

The boxes are fixed, so the tables say what `adgen-diffusion plan --device-memory … --host-memory …` prints
on any machine: the seed box (one 24 GB L4, 16 GB of host RAM) and an 80 GB card with 64 GB of host RAM.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from adgen_diffusion.planner import GIB, Box, MemoryPlanner, PlanDecision
from adgen_diffusion.registry import ModelRegistry

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- plans:begin -->", "<!-- plans:end -->"
BOXES = {
    "24 GiB GPU with FP8 compute (L4), 16 GiB host RAM": Box(device_bytes=24 * GIB, host_bytes=16 * GIB),
    "80 GiB GPU (A100/H100 class), 64 GiB host RAM": Box(device_bytes=80 * GIB, host_bytes=64 * GIB),
}


def _row(decision: PlanDecision) -> str:
    plan = decision.chosen or decision.smallest
    fits = "yes" if decision.fits else "**no**"
    return (
        f"| `{decision.model_id}` | {fits} | {plan.summary} | {plan.peak_device_bytes / GIB:.1f} GiB "
        f"| {plan.peak_host_bytes / GIB:.1f} GiB | {plan.quality_trade} |"
    )


def render_all() -> str:
    registry = ModelRegistry.load()
    sections = []
    for title, box in BOXES.items():
        planner = MemoryPlanner(box)
        rows = [
            f"**{title}** (`adgen-diffusion plan --device-memory {box.device_bytes // GIB}GiB "
            f"--host-memory {box.host_bytes // GIB}GiB`)",
            "",
            "| model | fits | plan | peak device | peak host | quality trade |",
            "|---|---|---|---|---|---|",
        ]
        rows += [_row(planner.plan(entry)) for entry in registry]
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def replace_section(text: str, body: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {BEGIN} … {END} section")
    return pattern.sub(lambda _: f"{BEGIN}\n{body}\n{END}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README's plan tables are stale")
    options = parser.parse_args()
    current = README.read_text()
    fresh = replace_section(current, render_all())
    if options.check:
        if fresh != current:
            raise SystemExit("README.md plan tables are stale; run `make readme`")
        print("README.md plan tables match the planner")
    else:
        README.write_text(fresh)


if __name__ == "__main__":
    main()
