"""The `adgen` CLI against a fake AdService: files written, progress shown, errors printed."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from google.protobuf import duration_pb2
from PIL import Image
from rich.console import Console
from rich.progress import Progress, TextColumn
from typer.testing import CliRunner, Result

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_client.cli import _JobBar, app
from tests.unit.client.conftest import FakeServer, image_of


async def _invoke(*args: str) -> Result:
    # The fake server runs on this event loop, so the blocking CLI runs in a thread.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_create_writes_every_variant_and_ad_json(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "ad"
    result = await _invoke(
        "create", "여름 느낌 딸기 생과일 주스", "--out", str(out), "--variants", "2", "--seed", "10",
        "--placement", "story", "--tone", "playful", "--format", "jpeg", "--width", "72", "--height", "128",
        "--target", fake_ad_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "ad.json").read_text(encoding="utf-8"))
    assert manifest["copy"]["caption"] == "여름 느낌 딸기 생과일 주스 출시!"
    assert manifest["copy"]["hashtags"] == ["딸기", "카페"] and manifest["copy"]["headline"] == "딸기 주스"
    assert manifest["seeds"] == [10, 11] and manifest["request_id"] == "rid-1"
    assert manifest["image_prompts"] == ["strawberry juice, composition 0", "strawberry juice, composition 1"]
    assert [image["file"] for image in manifest["images"]] == ["ad-1.jpg", "ad-2.jpg"]
    for image in manifest["images"]:
        with Image.open(out / image["file"]) as decoded:
            assert decoded.format == "JPEG" and decoded.size == (72, 128) == (image["width"], image["height"])
    request, _, _ = fake_ad_server.service.seen[0]
    assert request.placement == 3 and request.tone == 4 and request.output_format == 2  # type: ignore[attr-defined]
    assert "copy ready" in result.stderr
    # One live bar per variant, each finished.
    assert result.stderr.count("variant 1/2:") == 1 and result.stderr.count("variant 2/2: done") == 1
    assert str(out / "ad.json") in result.stdout


async def test_edit_writes_the_photo_and_edit_json(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    photo = tmp_path / "latte.png"
    photo.write_bytes(image_of(50, 40, image_pb2.IMAGE_FORMAT_PNG).data)
    out = tmp_path / "edit"
    result = await _invoke("edit", str(photo), "더 밝게", "--out", str(out), "--target", fake_ad_server.target)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "edit.json").read_text(encoding="utf-8"))
    assert manifest["instruction"] == "더 밝게" and manifest["edit_instruction"] == "Make it brighter."
    assert manifest["file"] == "edited.png" and (manifest["width"], manifest["height"]) == (50, 40)
    with Image.open(io.BytesIO((out / "edited.png").read_bytes())) as decoded:
        assert decoded.size == (50, 40)


async def test_errors_print_code_reason_and_fields_and_exit_non_zero(
    fake_ad_server: FakeServer, tmp_path: Path
) -> None:
    result = await _invoke("create", "empty", "--out", str(tmp_path), "--target", fake_ad_server.target)
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.stderr and "EMPTY_KEYWORD" in result.stderr
    assert "request.keyword: must not be empty" in result.stderr
    assert not (tmp_path / "ad.json").exists()


async def test_retryable_errors_say_when_to_retry(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    result = await _invoke("create", "busy", "--out", str(tmp_path), "--target", fake_ad_server.target)
    assert result.exit_code == 1 and "QUEUE_FULL" in result.stderr and "retry after 2s" in result.stderr


def test_variants_outside_one_to_four_are_refused_before_calling(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["create", "딸기", "--out", str(tmp_path), "--variants", "5"])
    assert result.exit_code == 2 and "variants" in result.stderr


async def test_create_passes_quality_overlay_and_disclosure_flags(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    result = await _invoke(
        "create", "딸기", "--out", str(tmp_path), "--quality", "quality", "--overlay-headline", "--ai-disclosure",
        "--target", fake_ad_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request, _, _ = fake_ad_server.service.seen[0]
    assert isinstance(request, ad_pb.CreateAdRequest)
    assert request.quality_preference == ad_pb.QUALITY_PREFERENCE_QUALITY
    assert request.overlay_headline and request.ai_disclosure


def _bar_after(*events: progress_pb2.Progress) -> str:
    progress = Progress(TextColumn("{task.description}"), console=Console(file=io.StringIO()))
    bar = _JobBar(progress, "variant 1/1")
    for event in events:
        bar.update(event)
    return str(progress.tasks[0].description)


def test_progress_bar_shows_queue_position_and_eta_then_loading_then_steps() -> None:
    queued = progress_pb2.Progress(
        stage=progress_pb2.PROGRESS_STAGE_QUEUED, queue_position=2, eta=duration_pb2.Duration(seconds=30)
    )
    loading = progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_LOADING, model_id="z-image-turbo")
    denoising = progress_pb2.Progress(stage=progress_pb2.PROGRESS_STAGE_DENOISING, step=3, total_steps=8)
    assert _bar_after(queued) == "variant 1/1: queued, 2 ahead, about 30s"
    assert _bar_after(queued, loading) == "variant 1/1: loading z-image-turbo"
    assert _bar_after(queued, loading, denoising) == "variant 1/1: denoising"


def test_a_seed_beyond_uint64_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["create", "딸기", "--out", str(tmp_path), "--seed", str(2**64)])
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
