"""The `adgen` CLI against a fake AdService: files written, progress shown, errors printed."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2
from PIL import Image
from rich.console import Console
from rich.progress import Progress, TextColumn
from typer.testing import CliRunner, Result

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2, progress_pb2
from adgen_client import AdGenClient
from adgen_client.cli import MAX_SEED, _JobBar, app, json_seed, option_name
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
    assert await asyncio.to_thread(os.listdir, tmp_path) == ["ad"]  # No staging folder left behind.


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
    # Fields are named as the CLI spells them, not as proto paths.
    assert "KEYWORD: must not be empty" in result.stderr and "--width: too big" in result.stderr
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


def test_an_unreachable_server_is_one_line_naming_the_target_and_how_to_change_it(tmp_path: Path) -> None:
    out = tmp_path / "ad"
    result = CliRunner().invoke(app, ["create", "딸기", "--out", str(out), "--target", "127.0.0.1:1", "--timeout", "5"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0] and "--target" in lines[0] and "ADGEN_TARGET" in lines[0]
    assert "failed to connect" not in result.stderr  # No gRPC core text.
    assert not out.exists()


async def test_a_failed_call_creates_no_out_directory(fake_ad_server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "ad"
    result = await _invoke("create", "empty", "--out", str(out), "--target", fake_ad_server.target)
    assert result.exit_code == 1 and not out.exists() and not out.parent.exists()


def test_option_names_replace_proto_field_paths() -> None:
    assert option_name("request.variant_count") == "--variants"
    assert option_name("keyword") == "KEYWORD" and option_name("request.num_inference_steps") == "--steps"
    assert option_name("facts.price") == "--facts price" and option_name("something_else") == "something_else"


@pytest.mark.parametrize("command", ["create", "edit"])
def test_help_shows_the_korean_example_whole_in_a_narrow_terminal(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    example = "여름 느낌 딸기 생과일 주스" if command == "create" else "커피를 딸기 라떼로 바꿔줘"
    assert result.exit_code == 0
    assert [line for line in result.stdout.splitlines() if example in line and "…" not in line]


def test_ctrl_c_prints_cancelled_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> Iterator[ad_pb.StreamCreateAdResponse]:
        raise KeyboardInterrupt
        yield  # A generator, as the real method is.

    monkeypatch.setattr(AdGenClient, "stream_create_ad", interrupted)
    result = CliRunner().invoke(app, ["create", "딸기", "--out", str(tmp_path / "ad")])
    assert result.exit_code == 130 and "cancelled" in result.stderr and "Traceback" not in result.output


def test_seeds_stay_within_53_bits_so_javascript_reads_them_exactly(tmp_path: Path) -> None:
    refused = CliRunner().invoke(app, ["create", "딸기", "--out", str(tmp_path), "--seed", str(MAX_SEED + 1)])
    assert refused.exit_code == 2 and MAX_SEED == 2**53 - 1
    assert json_seed(MAX_SEED) == MAX_SEED and json_seed(2**63 - 1) == str(2**63 - 1)


async def test_facts_caption_length_and_emoji_level_reach_the_request(
    fake_ad_server: FakeServer, tmp_path: Path
) -> None:
    result = await _invoke(
        "create", "딸기", "--out", str(tmp_path / "ad"), "--facts", "shop_name=하루카페", "--facts", "price=5,500원",
        "--facts", "extra=국내산", "--facts", "extra=매일 생과일", "--caption-length", "short", "--emoji-level", "none",
        "--target", fake_ad_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request, _, _ = fake_ad_server.service.seen[-1]
    assert isinstance(request, ad_pb.CreateAdRequest)
    assert request.facts == ad_pb2.MerchantFacts(shop_name="하루카페", price="5,500원", extra=["국내산", "매일 생과일"])
    assert request.caption_length == ad_pb2.CAPTION_LENGTH_SHORT and request.emoji_level == ad_pb2.EMOJI_LEVEL_NONE


@pytest.mark.parametrize("bad", [["price"], ["shop=하루카페"], ["price=1", "--facts", "price=2"]])
def test_malformed_facts_are_a_usage_error(tmp_path: Path, bad: list[str]) -> None:
    result = CliRunner().invoke(app, ["create", "딸기", "--out", str(tmp_path / "ad"), "--facts", *bad])
    assert result.exit_code == 2 and "--facts" in result.stderr


async def test_an_unset_format_leaves_the_choice_to_the_server_with_or_without_a_product(
    fake_ad_server: FakeServer, tmp_path: Path
) -> None:
    product = tmp_path / "juice.png"
    product.write_bytes(image_of(40, 60, image_pb2.IMAGE_FORMAT_PNG).data)
    plain = await _invoke("create", "딸기 주스", "--out", str(tmp_path / "a"), "--target", fake_ad_server.target)
    with_product = await _invoke(
        "create", "딸기 주스", "--out", str(tmp_path / "b"), "--product", str(product),
        "--target", fake_ad_server.target,
    )  # fmt: skip
    assert plain.exit_code == 0, plain.output
    assert with_product.exit_code == 0, with_product.output
    formats = [request.output_format for request, _, _ in fake_ad_server.service.seen]  # type: ignore[attr-defined]
    assert formats == [image_pb2.IMAGE_FORMAT_UNSPECIFIED] * 2


async def test_brand_pairs_become_the_request_brand_kit_and_its_errors_name_the_option(
    fake_ad_server: FakeServer, tmp_path: Path
) -> None:
    logo = tmp_path / "logo.png"
    buffer = io.BytesIO()
    Image.new("RGBA", (32, 16), (200, 30, 60, 128)).save(buffer, format="PNG")
    logo.write_bytes(buffer.getvalue())
    result = await _invoke(
        "create", "딸기 주스", "--out", str(tmp_path / "ad"), "--brand", "name=하루카페", "--brand", f"logo={logo}",
        "--brand", "primary_color=#102030", "--brand", "accent_color=#F0E0D0", "--target", fake_ad_server.target,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request, _, _ = fake_ad_server.service.seen[0]
    kit = request.brand  # type: ignore[attr-defined]
    assert (kit.name, kit.primary_color, kit.accent_color) == ("하루카페", "#102030", "#F0E0D0")
    assert kit.logo.data == logo.read_bytes()
    assert option_name("brand.primary_color") == "--brand primary_color"
    refused = await _invoke("create", "딸기 주스", "--out", str(tmp_path / "b"), "--brand", "colour=#000000")
    assert refused.exit_code == 2 and "--brand" in refused.output
