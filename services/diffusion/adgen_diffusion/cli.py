"""`adgen-diffusion`: serve, build the tiny twins, fetch real weights, list the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The AdGen diffusion service.", no_args_is_help=False, add_completion=False)


@app.callback(invoke_without_command=True)
def default(context: typer.Context) -> None:
    """Serves when no command is given."""
    if context.invoked_subcommand is None:
        serve()


@app.command()
def serve() -> None:
    """Serve DiffusionService (settings from ADGEN_DIFFUSION_* variables) until SIGTERM/SIGINT."""
    from adgen_diffusion.server import main

    main()


@app.command("build-tiny")
def build_tiny(
    models_dir: Annotated[Path, typer.Option(help="Where to put tiny/<name>/.")] = Path("models"),
    force: Annotated[bool, typer.Option(help="Rebuild even if current twins exist.")] = False,
) -> None:
    """Build the tiny random twins of every registry model (offline, a few seconds)."""
    from adgen_diffusion.twins import build_all_tiny_models

    for directory in build_all_tiny_models(models_dir, force=force):
        typer.echo(f"ready: {directory}")


@app.command()
def fetch(
    model_id: Annotated[str, typer.Argument(help="Registry id, e.g. flux2-klein-4b.")],
    variant: Annotated[
        str | None, typer.Option(help="A pre-quantized variant's name (see models.toml), instead of the weights.")
    ] = None,
) -> None:
    """Download a model's weights into the Hugging Face cache (HF_HOME); needs network."""
    from adgen_diffusion.errors import ModelNotFoundError
    from adgen_diffusion.registry import ModelRegistry
    from adgen_diffusion.weights import download, with_variant

    try:
        entry = ModelRegistry.load().get(model_id)
    except ModelNotFoundError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    chosen = next((v for v in entry.variants if v.name == variant), None)
    if variant is not None and chosen is None:
        names = ", ".join(v.name for v in entry.variants) or "none"
        typer.echo(f"{model_id} has no variant {variant!r}; its variants: {names}", err=True)
        raise typer.Exit(2)
    location = download(with_variant(entry, chosen))
    extras = [path for path in (location.single_file, location.lora_file) if path is not None]
    typer.echo(f"{model_id}: " + " + ".join(str(path) for path in [location.pipeline_dir, *extras]))


@app.command()
def models() -> None:
    """Print the registry."""
    from adgen_diffusion.registry import ModelRegistry

    for entry in ModelRegistry.load():
        tasks = ",".join(sorted(t.value for t in entry.tasks))
        licence = f"{entry.license} ({'commercial ok' if entry.commercial_use else 'non-commercial'})"
        typer.echo(f"{entry.id:36} {entry.repo:40} {tasks:26} {entry.family:20} {licence}")


@app.command()
def plan(
    model_ids: Annotated[list[str] | None, typer.Argument(help="Registry ids; none plans every model.")] = None,
    device_memory: Annotated[
        str | None, typer.Option(help="Device budget, e.g. 24GiB; default the detected GPU's memory.")
    ] = None,
    host_memory: Annotated[
        str | None, typer.Option(help="Host RAM budget, e.g. 16GiB; default the cgroup limit or MemAvailable.")
    ] = None,
    compute_capability: Annotated[
        str | None,
        typer.Option(help="GPU compute capability to plan for, e.g. 8.9 (L4); default the detected GPU's, else 8.9."),
    ] = None,
    width: Annotated[int, typer.Option(help="Image width to plan for; 0 is each model's native side.")] = 0,
    height: Annotated[int, typer.Option(help="Image height to plan for; 0 is each model's native side.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
) -> None:
    """Print how every model (or each one named) would run on a box of this size, without loading anything."""
    from adgen_diffusion.plan_report import plan_report

    try:
        text = plan_report(
            model_ids or [],
            device_memory=device_memory,
            host_memory=host_memory,
            compute_capability=compute_capability,
            width=width,
            height=height,
            as_json=as_json,
        )
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    typer.echo(text)
