"""The `adgen` command: create an ad from a Korean keyword, or edit a product photo."""

from __future__ import annotations

import enum
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_client.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, AdGenClient
from adgen_client.errors import AdGenError, Unavailable
from adgen_client.requests import FACT_NAMES, FILE_SUFFIXES, Facts

app = typer.Typer(
    help="AdGen: Instagram ad creatives from a Korean keyword, and product photo edits.",
    no_args_is_help=True,
    add_completion=False,
)
_ERR = Console(stderr=True)
_OUT = Console()


class PlacementChoice(enum.StrEnum):
    FEED_SQUARE = "feed-square"
    FEED_PORTRAIT = "feed-portrait"
    STORY = "story"


class ToneChoice(enum.StrEnum):
    FRIENDLY = "friendly"
    EMOTIONAL = "emotional"
    PREMIUM = "premium"
    PLAYFUL = "playful"
    INFORMATIVE = "informative"


class QualityChoice(enum.StrEnum):
    FAST = "fast"
    QUALITY = "quality"


class CaptionLengthChoice(enum.StrEnum):
    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"


class EmojiChoice(enum.StrEnum):
    NONE = "none"
    LIGHT = "light"
    RICH = "rich"


class FormatChoice(enum.StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


Target = Annotated[str, typer.Option(envvar="ADGEN_TARGET", help="host:port of the orchestrator.")]
Timeout = Annotated[float, typer.Option(help="Deadline of the whole request, in seconds.")]
Out = Annotated[Path, typer.Option(file_okay=False, help="Directory to write the files into.")]
# 53 bits: seeds land in ad.json / edit.json, and JavaScript reads JSON numbers as doubles.
MAX_SEED = 2**53 - 1
Seed = Annotated[int | None, typer.Option(min=0, max=MAX_SEED, help="Seed of the first image; unset picks one.")]
Steps = Annotated[int | None, typer.Option(min=1, help="Denoising steps; unset uses the model's default.")]
Model = Annotated[str, typer.Option(help="Registry id of the model; empty uses the server's default.")]
Format = Annotated[FormatChoice, typer.Option("--format", help="Format of the written image files.")]
RequestId = Annotated[
    str,
    typer.Option(help="Request id for logs and tracing; resending one returns the same result. Empty: server picks."),
]
Disclose = Annotated[
    bool, typer.Option("--ai-disclosure", help='Add a visible "AI 생성" badge (and, for ads, a caption line).')
]


@app.command()
def create(
    keyword: Annotated[str, typer.Argument(help="Korean product keyword (see the example above).")],
    out: Out,
    placement: Annotated[PlacementChoice, typer.Option(help="Instagram placement.")] = PlacementChoice.FEED_SQUARE,
    variants: Annotated[int, typer.Option(min=1, max=4, help="Number of image variants.")] = 1,
    seed: Seed = None,
    tone: Annotated[ToneChoice | None, typer.Option(help="Voice of the copy.")] = None,
    image_format: Format = FormatChoice.PNG,
    width: Annotated[int, typer.Option(help="Explicit width (with --height), overriding the placement.")] = 0,
    height: Annotated[int, typer.Option(help="Explicit height (with --width), overriding the placement.")] = 0,
    steps: Steps = None,
    model: Model = "",
    quality: Annotated[
        QualityChoice | None, typer.Option(help="Speed or quality: picks the model when --model is not given.")
    ] = None,
    overlay_headline: Annotated[
        bool, typer.Option("--overlay-headline", help="Draw the Korean headline onto each image.")
    ] = False,
    ai_disclosure: Disclose = False,
    caption_length: Annotated[CaptionLengthChoice | None, typer.Option(help="Caption length; unset: medium.")] = None,
    emoji: Annotated[
        EmojiChoice | None, typer.Option("--emoji-level", help="Emoji in the caption; unset: light.")
    ] = None,
    facts: Annotated[
        list[str] | None,
        typer.Option(
            "--facts",
            metavar="NAME=VALUE",
            help=f"A fact the copy may use, repeatable; NAME is one of {', '.join(FACT_NAMES)}.",
        ),
    ] = None,
    request_id: RequestId = "",
    target: Target = DEFAULT_TARGET,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
) -> None:
    """Writes the ad's images and ad.json (copy, prompts, seeds, sizes) into --out.

    \b
    Example:
      adgen create "여름 느낌 딸기 생과일 주스" --out ./ad --facts price=5,500원
    """
    merchant = _parsed_facts(facts or [])
    result: ad_pb.CreateAdResponse | None = None
    with _fail_on_error(target), AdGenClient(target, timeout=timeout) as client, _progress() as progress:
        bars: dict[int, _JobBar] = {}

        def bar_of(index: int) -> _JobBar:
            if index not in bars:
                bars[index] = _JobBar(progress, f"variant {index + 1}/{variants}")
            return bars[index]

        events = client.stream_create_ad(
            keyword,
            placement=placement.value,
            variant_count=variants,
            seed=seed,
            tone=tone.value if tone else None,
            output_format=image_format.value,
            width=width,
            height=height,
            num_inference_steps=steps,
            model_id=model,
            quality=quality.value if quality else None,
            caption_length=caption_length.value if caption_length else None,
            emoji_level=emoji.value if emoji else None,
            facts=merchant,
            overlay_headline=overlay_headline,
            ai_disclosure=ai_disclosure,
            request_id=request_id,
        )
        for event in events:
            kind = event.WhichOneof("event")
            if kind == "copy":
                progress.console.print(f"[green]✓[/] copy ready: {escape(event.copy.headline or event.copy.hook)}")
            elif kind == "progress":
                bar_of(event.progress.variant_index).update(event.progress.progress)
            elif kind == "image":
                index = event.image.variant_index
                bar_of(index).finish()
                progress.console.print(f"[green]✓[/] variant {index + 1} ready (seed {event.image.seed})")
            elif kind == "result":
                result = event.result
    if result is None:
        _ERR.print("[red]error:[/] the server ended the stream without a result")
        raise typer.Exit(1)
    files = _written(out, lambda staging: _write_ad(result, keyword, placement, staging))
    for path in files:
        _OUT.print(str(path))


@app.command()
def edit(
    photo: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The product photo (PNG, JPEG or WebP).")],
    instruction: Annotated[str, typer.Argument(help='What to change, e.g. "커피를 딸기 라떼로 바꿔줘".')],
    out: Out,
    seed: Seed = None,
    image_format: Format = FormatChoice.PNG,
    steps: Steps = None,
    model: Model = "",
    ai_disclosure: Disclose = False,
    request_id: RequestId = "",
    target: Target = DEFAULT_TARGET,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
) -> None:
    """Writes the edited photo (at the original size) and edit.json into --out.

    \b
    Example:
      adgen edit photo.jpg "커피를 딸기 라떼로 바꿔줘" --out ./edit
    """
    result: ad_pb.EditAdResponse | None = None
    with _fail_on_error(target), AdGenClient(target, timeout=timeout) as client, _progress() as progress:
        bar = _JobBar(progress, "edit")
        events = client.stream_edit_ad(
            photo,
            instruction,
            seed=seed,
            output_format=image_format.value,
            num_inference_steps=steps,
            model_id=model,
            ai_disclosure=ai_disclosure,
            request_id=request_id,
        )
        for event in events:
            if event.HasField("progress"):
                bar.update(event.progress)
            elif event.HasField("result"):
                bar.finish()
                result = event.result
    if result is None:
        _ERR.print("[red]error:[/] the server ended the stream without a result")
        raise typer.Exit(1)
    paths = _written(out, lambda staging: _write_edit(result, photo, instruction, staging))
    for path in paths:
        _OUT.print(str(path))


def _write_edit(result: ad_pb.EditAdResponse, photo: Path, instruction: str, out: Path) -> list[Path]:
    """Writes the edited image and edit.json; returns the paths written."""
    image_path = out / f"edited.{FILE_SUFFIXES[result.image.format]}"
    image_path.write_bytes(result.image.data)
    manifest = {
        "source_photo": str(photo),
        "instruction": instruction,
        "edit_instruction": result.edit_instruction,
        "model_id": result.model_id,
        "seed": json_seed(result.seed),
        "request_id": result.request_id,
        "total_duration_s": round(result.total_duration.ToNanoseconds() / 1e9, 3),
        "file": image_path.name,
        "width": result.image.width,
        "height": result.image.height,
        "format": _format_name(result.image.format),
    }
    manifest_path = out / "edit.json"
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return [image_path, manifest_path]


def json_seed(seed: int) -> int | str:
    """A seed as JSON carries it safely: a number up to 2^53-1 (exact in JavaScript), else a string."""
    return seed if seed <= MAX_SEED else str(seed)


def _written(out: Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Runs `write` into a staging folder next to `out`, then moves the files in: --out appears only
    once there is something to put in it, and never holds half a result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as staging:
        staged = write(Path(staging))
        out.mkdir(exist_ok=True)
        return [Path(shutil.move(path, out / path.name)) for path in staged]


def _parsed_facts(pairs: Sequence[str]) -> Facts | None:
    """The --facts NAME=VALUE pairs as Facts; `extra` may repeat, the others may not."""
    if not pairs:
        return None
    values: dict[str, str] = {}
    extra: list[str] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in FACT_NAMES:
            raise typer.BadParameter(
                f"{pair!r}: expected NAME=VALUE, NAME one of {', '.join(FACT_NAMES)}", param_hint="--facts"
            )
        if name == "extra":
            extra.append(value)
        elif name in values:
            raise typer.BadParameter(f"{name} is given more than once", param_hint="--facts")
        else:
            values[name] = value
    return Facts(**values, extra=tuple(extra))


def _write_ad(result: ad_pb.CreateAdResponse, keyword: str, placement: PlacementChoice, out: Path) -> list[Path]:
    """Writes one file per variant and ad.json; returns the paths written."""
    paths: list[Path] = []
    images: list[dict[str, Any]] = []
    for ad_image in result.images:
        path = out / f"ad-{ad_image.variant_index + 1}.{FILE_SUFFIXES[ad_image.image.format]}"
        path.write_bytes(ad_image.image.data)
        paths.append(path)
        images.append(
            {
                "file": path.name,
                "variant_index": ad_image.variant_index,
                "seed": json_seed(ad_image.seed),
                "width": ad_image.image.width,
                "height": ad_image.image.height,
                "format": _format_name(ad_image.image.format),
                "image_prompt": ad_image.image_prompt,
            }
        )
    copy = result.copy
    manifest = {
        "keyword": keyword,
        "placement": placement.value,
        "copy": {
            "caption": copy.caption,
            "hook": copy.hook,
            "hashtags": list(copy.hashtags),
            "headline": copy.headline,
            "alt_text": copy.alt_text,
            "facts_used": list(copy.facts_used),
            "written_by": copy.written_by,
        },
        "image_prompts": [image["image_prompt"] for image in images],
        "model_id": result.model_id,
        "num_inference_steps": result.num_inference_steps,
        "seeds": [image["seed"] for image in images],
        "request_id": result.request_id,
        "total_duration_s": round(result.total_duration.ToNanoseconds() / 1e9, 3),
        "images": images,
    }
    manifest_path = out / "ad.json"
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return [*paths, manifest_path]


def _format_name(image_format: image_pb2.ImageFormat.ValueType) -> str:
    return image_pb2.ImageFormat.Name(image_format).removeprefix("IMAGE_FORMAT_").lower()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_ERR,
    )


class _JobBar:
    """One progress bar following an image job through queue, load, denoise and decode."""

    def __init__(self, progress: Progress, label: str) -> None:
        self._progress = progress
        self._label = label
        self._task: TaskID = progress.add_task(f"{label}: starting", total=None)

    def update(self, event: progress_pb2.Progress) -> None:
        stage = event.stage
        if stage == progress_pb2.PROGRESS_STAGE_QUEUED:
            eta = f", about {event.eta.ToSeconds()}s" if event.HasField("eta") else ""
            self._describe(f"queued, {event.queue_position} ahead{eta}")
        elif stage == progress_pb2.PROGRESS_STAGE_UNLOADING:
            self._describe("unloading the previous model")
        elif stage == progress_pb2.PROGRESS_STAGE_LOADING:
            self._describe(f"loading {event.model_id or 'the model'}")
        elif stage == progress_pb2.PROGRESS_STAGE_DENOISING:
            self._progress.update(
                self._task, description=f"{self._label}: denoising", total=event.total_steps, completed=event.step
            )
        elif stage == progress_pb2.PROGRESS_STAGE_DECODING:
            self._describe("decoding")
        elif stage == progress_pb2.PROGRESS_STAGE_DONE:
            self.finish()

    def finish(self) -> None:
        total = self._progress.tasks[self._task].total or 1
        self._progress.update(self._task, description=f"{self._label}: done", total=total, completed=total)

    def _describe(self, text: str) -> None:
        self._progress.update(self._task, description=f"{self._label}: {text}")


# Request fields (as servers name them in field violations) by the CLI argument or option that sets them.
_OPTION_OF_FIELD = {
    "keyword": "KEYWORD",
    "variant_count": "--variants",
    "placement": "--placement",
    "tone": "--tone",
    "seed": "--seed",
    "width": "--width",
    "height": "--height",
    "output_format": "--format",
    "num_inference_steps": "--steps",
    "model_id": "--model",
    "quality_preference": "--quality",
    "caption_length": "--caption-length",
    "emoji_level": "--emoji-level",
    "facts": "--facts",
    "request_id": "--request-id",
    "overlay_headline": "--overlay-headline",
    "ai_disclosure": "--ai-disclosure",
    "image": "PHOTO",
    "instruction": "INSTRUCTION",
}
EXIT_UNREACHABLE = 2
EXIT_CANCELLED = 130


def option_name(field_path: str) -> str:
    """The CLI's name for a request field path: `variant_count` -> `--variants`, `facts.price` -> `--facts price`."""
    path = field_path.removeprefix("request.")
    head, sep, rest = path.partition(".")
    option = _OPTION_OF_FIELD.get(head)
    if option is None:
        return field_path
    return f"{option} {rest}" if sep else option


@contextmanager
def _fail_on_error(target: str) -> Iterator[None]:
    """Prints an AdGenError (code, reason, message, field violations) and exits non-zero; an unreachable
    server and Ctrl-C get one line each."""
    try:
        yield
    except KeyboardInterrupt:
        _ERR.print("[yellow]cancelled[/]", highlight=False)
        raise typer.Exit(EXIT_CANCELLED) from None
    except Unavailable as error:
        if error.reason:  # The orchestrator answered: a service behind it is down.
            _print_error(error)
            raise typer.Exit(1) from None
        _ERR.print(
            f"[red]error:[/] cannot reach the AdGen server at {escape(target)}; is it running? "
            "Point at another with --target HOST:PORT or ADGEN_TARGET.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except AdGenError as error:
        _print_error(error)
        raise typer.Exit(1) from None


def _print_error(error: AdGenError) -> None:
    reason = f" [bold]{error.reason}[/]" if error.reason else ""
    _ERR.print(f"[red]error:[/] {error.code.name}{reason}: {escape(error.message)}", highlight=False)
    for violation in error.field_violations:
        _ERR.print(f"  - {option_name(violation.field)}: {escape(violation.description)}", highlight=False)
    if error.retry_after_s is not None:
        _ERR.print(f"  retry after {error.retry_after_s:g}s", highlight=False)
    if error.request_id:
        _ERR.print(f"  request id: {error.request_id}", highlight=False)
