"""The `adgen` command: create an ad from a Korean keyword, or edit a product photo."""

from __future__ import annotations

import enum
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2, progress_pb2
from adgen_client.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, AdGenClient
from adgen_client.connection import TOKEN_ENV, tls_credentials
from adgen_client.errors import AdGenError, PermissionDenied, Unauthenticated, Unavailable
from adgen_client.requests import FACT_NAMES, FILE_SUFFIXES, Brand, Facts

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
Tls = Annotated[bool, typer.Option("--tls", envvar="ADGEN_TLS", help="Connect over TLS (implied by --ca).")]
Ca = Annotated[
    Path | None,
    typer.Option(
        "--ca", envvar="ADGEN_CA_FILE", exists=True, dir_okay=False, metavar="FILE",
        help="CA certificate (PEM) the server's certificate must chain to; unset: the system's roots.",
    ),
]  # fmt: skip
ClientCert = Annotated[
    Path | None,
    typer.Option(
        "--cert", envvar="ADGEN_CLIENT_CERT_FILE", exists=True, dir_okay=False, metavar="FILE",
        help="Client certificate (PEM) for a server that asks for one (mTLS), with --key.",
    ),
]  # fmt: skip
ClientKey = Annotated[
    Path | None,
    typer.Option(
        "--key", envvar="ADGEN_CLIENT_KEY_FILE", exists=True, dir_okay=False, metavar="FILE",
        help="Private key (PEM) of --cert.",
    ),
]  # fmt: skip
Token = Annotated[
    str,
    typer.Option(
        "--token", envvar=TOKEN_ENV, show_default=False, show_envvar=True,
        help="Bearer token (an API key or a JWT); prefer the variable, a flag shows in the process list.",
    ),
]  # fmt: skip
Timeout = Annotated[float, typer.Option(help="Deadline of the whole request, in seconds.")]
Out = Annotated[Path, typer.Option(file_okay=False, help="Directory to write the files into.")]
# 53 bits: seeds land in ad.json / edit.json, and JavaScript reads JSON numbers as doubles.
MAX_SEED = 2**53 - 1
Seed = Annotated[int | None, typer.Option(min=0, max=MAX_SEED, help="Seed of the first image; unset picks one.")]
Steps = Annotated[int | None, typer.Option(min=1, help="Denoising steps; unset uses the model's default.")]
Model = Annotated[str, typer.Option(help="Registry id of the model; empty uses the server's default.")]
Format = Annotated[
    FormatChoice | None,
    typer.Option(
        "--format",
        help="Format of the written image files. Unset: the server's default, JPEG (PNG for a cut-out --product, "
        "so the product stays pixel for pixel).",
    ),
]
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
    placement: Annotated[
        list[PlacementChoice] | None,
        typer.Option(help="Instagram placement; repeat it for several sizes of the same ad (default feed-square)."),
    ] = None,
    product: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="PHOTO",
            help="The shop's own product photo (PNG, JPEG or WebP), repeatable up to 3; the scene is generated "
            "around it. A PNG or WebP with a transparent background stays pixel for pixel.",
        ),
    ] = None,
    variants: Annotated[int, typer.Option(min=1, max=4, help="Number of image variants.")] = 1,
    seed: Seed = None,
    tone: Annotated[ToneChoice | None, typer.Option(help="Voice of the copy.")] = None,
    image_format: Format = None,
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
    brand: Annotated[
        list[str] | None,
        typer.Option(
            "--brand",
            metavar="NAME=VALUE",
            help=f"The brand kit, repeatable; NAME is one of {', '.join(BRAND_FIELDS)} (logo: a PNG file with "
            "transparency; colours as #RRGGBB).",
        ),
    ] = None,
    request_id: RequestId = "",
    target: Target = DEFAULT_TARGET,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    tls: Tls = False,
    ca: Ca = None,
    cert: ClientCert = None,
    key: ClientKey = None,
    token: Token = "",
) -> None:
    """Writes the ad's images and ad.json (copy, prompts, seeds, sizes) into --out.

    \b
    Example:
      adgen create "여름 느낌 딸기 생과일 주스" --out ./ad --facts price=5,500원
      adgen create "딸기 주스" --out ./ad --product juice.png --placement feed-square --placement story
    """
    merchant = _parsed_facts(facts or [])
    brand_kit = _parsed_brand(brand or [])
    placements = list(dict.fromkeys(placement or [PlacementChoice.FEED_SQUARE]))
    result: ad_pb.CreateAdResponse | None = None
    connection = _Connection(target, tls, ca, cert, key, token)
    with _fail_on_error(connection), _client(connection, timeout) as client, _progress() as progress:
        bars: dict[int, _JobBar] = {}

        def bar_of(index: int) -> _JobBar:
            if index not in bars:
                bars[index] = _JobBar(progress, f"variant {index + 1}/{variants}")
            return bars[index]

        events = client.stream_create_ad(
            keyword,
            placement=placements[0].value,
            placements=[choice.value for choice in placements] if len(placements) > 1 else [],
            product_photos=list(product or []),
            variant_count=variants,
            seed=seed,
            tone=tone.value if tone else None,
            output_format=image_format.value if image_format else None,
            width=width,
            height=height,
            num_inference_steps=steps,
            model_id=model,
            quality=quality.value if quality else None,
            caption_length=caption_length.value if caption_length else None,
            emoji_level=emoji.value if emoji else None,
            facts=merchant,
            brand=brand_kit,
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
                where = f" {_placement_name(event.image.placement)}" if len(placements) > 1 else ""
                progress.console.print(f"[green]✓[/] variant {index + 1}{where} ready (seed {event.image.seed})")
            elif kind == "result":
                result = event.result
    if result is None:
        _ERR.print("[red]error:[/] the server ended the stream without a result")
        raise typer.Exit(1)
    files = _written(out, lambda staging: _write_ad(result, keyword, placements, product or [], staging))
    for path in files:
        _OUT.print(str(path))


@app.command()
def edit(
    photo: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The product photo (PNG, JPEG or WebP).")],
    instruction: Annotated[str, typer.Argument(help='What to change, e.g. "커피를 딸기 라떼로 바꿔줘".')],
    out: Out,
    seed: Seed = None,
    image_format: Format = None,
    steps: Steps = None,
    model: Model = "",
    ai_disclosure: Disclose = False,
    request_id: RequestId = "",
    target: Target = DEFAULT_TARGET,
    timeout: Timeout = DEFAULT_TIMEOUT_S,
    tls: Tls = False,
    ca: Ca = None,
    cert: ClientCert = None,
    key: ClientKey = None,
    token: Token = "",
) -> None:
    """Writes the edited photo (at the original size) and edit.json into --out.

    \b
    Example:
      adgen edit photo.jpg "커피를 딸기 라떼로 바꿔줘" --out ./edit
    """
    result: ad_pb.EditAdResponse | None = None
    connection = _Connection(target, tls, ca, cert, key, token)
    with _fail_on_error(connection), _client(connection, timeout) as client, _progress() as progress:
        bar = _JobBar(progress, "edit")
        events = client.stream_edit_ad(
            photo,
            instruction,
            seed=seed,
            output_format=image_format.value if image_format else None,
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


@dataclass(frozen=True)
class _Connection:
    """The connection options of a command, as given."""

    target: str
    tls: bool
    ca: Path | None
    cert: Path | None
    key: Path | None
    token: str = field(repr=False)

    @property
    def secure(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None


def _client(connection: _Connection, timeout: float) -> AdGenClient:
    """The SDK client for the options; a bad combination is a usage error naming the option to fix."""
    if (connection.cert is None) != (connection.key is None):
        raise typer.BadParameter("a client certificate needs both --cert and --key", param_hint="--cert/--key")
    try:
        credentials = (
            tls_credentials(connection.ca, certificate_chain=connection.cert, private_key=connection.key)
            if connection.secure
            else None
        )
        # token="" sends none: the option already read ADGEN_TOKEN.
        return AdGenClient(connection.target, credentials=credentials, token=connection.token, timeout=timeout)
    except ValueError as error:  # a token for a plaintext remote target, an unreadable PEM file
        raise typer.BadParameter(str(error)) from None


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


BRAND_FIELDS = ("name", "logo", "primary_color", "accent_color", "headline_font")


def _parsed_brand(pairs: Sequence[str]) -> Brand | None:
    """The --brand NAME=VALUE pairs as a Brand; `logo` is a file path, read when the request is built."""
    if not pairs:
        return None
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in BRAND_FIELDS:
            raise typer.BadParameter(
                f"{pair!r}: expected NAME=VALUE, NAME one of {', '.join(BRAND_FIELDS)}", param_hint="--brand"
            )
        if name in values:
            raise typer.BadParameter(f"{name} is given more than once", param_hint="--brand")
        values[name] = value
    logo = values.pop("logo", None)
    if logo is not None and not Path(logo).is_file():
        raise typer.BadParameter(f"logo {logo!r} is not a file", param_hint="--brand")
    return Brand(**values, logo=Path(logo) if logo is not None else None)


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


def _placement_name(placement: ad_pb2.Placement.ValueType) -> str:
    return ad_pb2.Placement.Name(placement).removeprefix("PLACEMENT_").lower().replace("_", "-")


def _write_ad(
    result: ad_pb.CreateAdResponse,
    keyword: str,
    placements: Sequence[PlacementChoice],
    products: Sequence[Path],
    out: Path,
) -> list[Path]:
    """Writes one file per variant (and placement, when there are several) and ad.json; returns the paths written."""
    paths: list[Path] = []
    images: list[dict[str, Any]] = []
    for ad_image in result.images:
        where = f"-{_placement_name(ad_image.placement)}" if len(placements) > 1 else ""
        path = out / f"ad-{ad_image.variant_index + 1}{where}.{FILE_SUFFIXES[ad_image.image.format]}"
        path.write_bytes(ad_image.image.data)
        paths.append(path)
        images.append(
            {
                "file": path.name,
                "variant_index": ad_image.variant_index,
                "placement": _placement_name(ad_image.placement) if ad_image.placement else placements[0].value,
                "seed": json_seed(ad_image.seed),
                "width": ad_image.image.width,
                "height": ad_image.image.height,
                "format": _format_name(ad_image.image.format),
                "image_prompt": ad_image.image_prompt,
            }
        )
    copy = result.copy
    first_placement = [image for image in images if image["placement"] == placements[0].value]
    manifest = {
        "keyword": keyword,
        "placement": placements[0].value,
        "placements": [choice.value for choice in placements],
        "product_photos": [str(path) for path in products],
        "copy": {
            "caption": copy.caption,
            "hook": copy.hook,
            "hashtags": list(copy.hashtags),
            "headline": copy.headline,
            "alt_text": copy.alt_text,
            "facts_used": list(copy.facts_used),
            "written_by": copy.written_by,
        },
        # Per variant: every placement of a variant has the same prompt and seed.
        "image_prompts": [image["image_prompt"] for image in first_placement],
        "model_id": result.model_id,
        "num_inference_steps": result.num_inference_steps,
        "seeds": [image["seed"] for image in first_placement],
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
    "placements": "--placement",
    "product_photos": "--product",
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
    "brand": "--brand",
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
    name, bracket, index = head.partition("[")
    option = _OPTION_OF_FIELD.get(name)
    if option is None:
        return field_path
    if bracket and index.rstrip("]").isdigit():  # product_photos[1].data -> --product #2, the order given
        return f"{option} #{int(index.rstrip(']')) + 1}"
    return f"{option} {rest}" if sep else option


@contextmanager
def _fail_on_error(connection: _Connection) -> Iterator[None]:
    """Prints an AdGenError (code, reason, message, field violations) and exits non-zero; an unreachable
    server, a refused token and Ctrl-C get a hint each."""
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
            f"[red]error:[/] cannot reach the AdGen server at {escape(connection.target)}; is it running? "
            f"Point at another with --target HOST:PORT or ADGEN_TARGET. {_tls_hint(connection, error)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except (Unauthenticated, PermissionDenied) as error:
        _print_error(error)
        _ERR.print(f"  {_auth_hint(connection, error)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except AdGenError as error:
        _print_error(error)
        raise typer.Exit(1) from None


def _tls_hint(connection: _Connection, error: Unavailable) -> str:
    """What to try when the connection failed: TLS when it was plaintext, the CA when the handshake failed."""
    if not connection.secure:
        return "If it serves TLS, pass --tls (and --ca FILE for a private CA)."
    if "certificate" in error.message.lower() or "handshake" in error.message.lower():
        return "The TLS handshake failed: check --ca (the CA that signed the server's certificate) and --target."
    if connection.cert is None:
        return "Over TLS: check that it serves TLS on this port, and whether it wants a client certificate (--cert)."
    return "Over TLS: check that it serves TLS on this port and accepts the client certificate."


def _auth_hint(connection: _Connection, error: AdGenError) -> str:
    if isinstance(error, PermissionDenied):
        role = error.metadata.get("required_role")
        return f"This needs the {role} role; ask for a token with it." if role else "This token may not do this."
    if not connection.token:
        return f"The server wants a token: set {TOKEN_ENV} (or pass --token)."
    return "The server refused the token: check that it is current and meant for this server."


def _print_error(error: AdGenError) -> None:
    reason = f" [bold]{error.reason}[/]" if error.reason else ""
    _ERR.print(f"[red]error:[/] {error.code.name}{reason}: {escape(error.message)}", highlight=False)
    for violation in error.field_violations:
        _ERR.print(f"  - {option_name(violation.field)}: {escape(violation.description)}", highlight=False)
    if error.retry_after_s is not None:
        _ERR.print(f"  retry after {error.retry_after_s:g}s", highlight=False)
    if error.request_id:
        _ERR.print(f"  request id: {error.request_id}", highlight=False)
