"""`adgen-diffusion plan`: every seed model's plan for a box, as a table and as JSON, without loading anything."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from adgen_diffusion.cli import app
from adgen_diffusion.planner import GIB
from adgen_diffusion.registry import ModelRegistry

SEED_BOX = ["--device-memory", "24GiB", "--host-memory", "16GiB"]


def test_plan_json_shows_every_seed_model_fitting_the_seed_box() -> None:
    result = CliRunner().invoke(app, ["plan", *SEED_BOX, "--json"])
    assert result.exit_code == 0, result.output
    plans = json.loads(result.stdout)
    assert [p["model_id"] for p in plans] == [entry.id for entry in ModelRegistry.load()]
    for plan in plans:
        assert plan["fits"] and plan["plan"]
        assert set(plan["components"]) == {"transformer", "text_encoder", "vae"}
        assert {"placement", "dtype", "quantization"} <= set(plan["components"]["transformer"])
        assert plan["weight_bytes"] > 0 and plan["peak_device_bytes"] <= 24 * GIB
        assert plan["peak_host_bytes"] <= 16 * GIB == plan["host_budget_bytes"]


def test_plan_table_names_a_model_that_does_not_fit_a_small_box() -> None:
    result = CliRunner().invoke(
        app, ["plan", "qwen-image-edit-2511", "--device-memory", "8GiB", "--host-memory", "4GiB"]
    )
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("qwen-image-edit-2511")]
    assert " NO " in row


def test_plan_refuses_an_unknown_model_and_a_bad_size_in_one_line() -> None:
    unknown = CliRunner().invoke(app, ["plan", "sdxl", *SEED_BOX])
    assert unknown.exit_code == 2 and "not in the registry" in unknown.output
    bad = CliRunner().invoke(app, ["plan", "--device-memory", "lots"])
    assert bad.exit_code == 2 and "24GiB" in bad.output
