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
    from adgen_diffusion.tiny import build_all_tiny_models

    for directory in build_all_tiny_models(models_dir, force=force):
        typer.echo(f"ready: {directory}")


@app.command()
def fetch(model_id: Annotated[str, typer.Argument(help="Registry id, e.g. flux2-klein-4b.")]) -> None:
    """Download a model's weights into the Hugging Face cache (HF_HOME); needs network."""
    from adgen_diffusion.errors import ModelNotFoundError
    from adgen_diffusion.registry import ModelRegistry
    from adgen_diffusion.weights import download

    try:
        entry = ModelRegistry.load().get(model_id)
    except ModelNotFoundError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    location = download(entry)
    extras = [path for path in (location.single_file, location.lora_file) if path is not None]
    typer.echo(f"{model_id}: " + " + ".join(str(path) for path in [location.pipeline_dir, *extras]))


@app.command()
def models() -> None:
    """Print the registry."""
    from adgen_diffusion.registry import ModelRegistry

    for entry in ModelRegistry.load():
        tasks = ",".join(sorted(t.value for t in entry.tasks))
        licence = f"{entry.license} ({'commercial ok' if entry.commercial_use else 'non-commercial'})"
        typer.echo(f"{entry.id:36} {entry.repo:40} {tasks:26} {entry.placement:14} {licence}")
