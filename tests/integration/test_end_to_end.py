"""CreateAd and EditAd through the three real services over gRPC, on the tiny random models."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image, ImageChops
from typer.testing import CliRunner

from adgen.type.v1 import ad_pb2, progress_pb2
from adgen_client import AdGenError, AsyncAdGenClient
from adgen_client.cli import app
from adgen_client.requests import CreateAdOptions
from adgen_orchestrator.ad_pipeline import AI_DISCLOSURE_LINE
from adgen_orchestrator.overlay import Box, safe_zone_for
from adgen_orchestrator.provenance import IPTC_DIGITAL_SOURCE_TYPE as IPTC
from adgen_wire.channel import create_aio_channel
from tests.live_services import Services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYWORD = "여름 느낌 딸기 생과일 주스"
SMALL: CreateAdOptions = {"width": 128, "height": 128, "num_inference_steps": 2, "seed": 1}
HANGUL = re.compile("[가-힣]")


def _decoded_size(data: bytes, expected_format: str = "JPEG") -> tuple[int, int]:  # JPEG: the default
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == expected_format
        return image.size


async def _all_serving(services: Services) -> bool:
    """Each service still answers its own readiness check with SERVING."""
    for target, service in (
        (services.orchestrator, "adgen.ad.v1.AdService"),
        (services.copywriter, "adgen.copywriter.v1.CopywriterService"),
        (services.diffusion, "adgen.diffusion.v1.DiffusionService"),
    ):
        async with create_aio_channel(target) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return False
    return True


async def test_create_ad_returns_korean_copy_and_a_png_at_the_exact_size(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(KEYWORD, width=144, height=96, num_inference_steps=2, seed=3)
    assert HANGUL.search(ad.copy.caption) and 1 <= len(ad.copy.hashtags) <= 5
    (image,) = ad.images
    assert _decoded_size(image.image.data) == (144, 96) == (image.image.width, image.image.height)
    assert image.image_prompt.isascii() and len(image.image_prompt.split()) > 3  # an English prompt
    assert image.seed == 3 and ad.model_id == "flux2-klein-4b" and ad.num_inference_steps == 2


async def test_stream_create_ad_reports_progress_in_order_and_ends_with_the_result(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        events = [event async for event in client.stream_create_ad(KEYWORD, **(SMALL | {"variant_count": 2}))]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "copy" and kinds[-1] == "result" and kinds.count("image") == 2
    for variant in (0, 1):
        stages = [
            e.progress.progress.stage for e in events if e.HasField("progress") and e.progress.variant_index == variant
        ]
        assert progress_pb2.PROGRESS_STAGE_DENOISING in stages
        assert stages == sorted(stages), "stages must only move forward"
        steps = [
            e.progress.progress.step
            for e in events
            if e.HasField("progress") and e.progress.variant_index == variant and e.progress.progress.step
        ]
        assert steps == sorted(steps) and steps[-1] == 2
    result = events[-1].result
    assert [image.variant_index for image in result.images] == [0, 1]
    assert len({image.image_prompt for image in result.images}) == 2  # variants differ in composition
    assert all(_decoded_size(image.image.data) == (128, 128) for image in result.images)


async def test_edit_ad_on_a_generated_photo_keeps_its_size(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(KEYWORD, width=160, height=96, num_inference_steps=2, seed=5)
        photo = ad.images[0].image.data
        edited = await client.edit_ad(photo, "컵을 빨간색으로 바꿔줘", num_inference_steps=2, seed=9)
    assert _decoded_size(edited.image.data) == (160, 96)
    assert re.match("[A-Z][a-z]+ ", edited.edit_instruction), "the edit model gets an English instruction"
    assert edited.model_id == "qwen-image-edit-2511" and edited.seed == 9


@pytest.mark.parametrize(
    ("keyword", "width", "height", "reason", "fields"),
    [
        ("   ", 0, 0, "EMPTY_KEYWORD", ["keyword"]),
        (KEYWORD, 4096, 128, "INVALID_SIZE", ["width"]),
        (KEYWORD, 128, 0, "INVALID_SIZE", ["height"]),
    ],
)
async def test_bad_create_requests_are_invalid_argument_and_the_services_stay_up(
    services: Services, keyword: str, width: int, height: int, reason: str, fields: list[str]
) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad(keyword, width=width, height=height)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and raised.value.reason == reason
    assert [v.field for v in raised.value.field_violations] == fields
    assert await _all_serving(services)


async def test_a_file_that_is_not_an_image_is_invalid_image(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            await client.edit_ad(b"%PDF-1.7 definitely not a photo", "밝게 해줘")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and raised.value.reason == "INVALID_IMAGE"
    assert [v.field for v in raised.value.field_violations] == ["image.data"]
    assert await _all_serving(services)


async def test_diffusion_down_is_unavailable_upstream_unavailable(orchestrator_without_diffusion: str) -> None:
    async with AsyncAdGenClient(orchestrator_without_diffusion, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad(KEYWORD, **SMALL)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.reason == "UPSTREAM_UNAVAILABLE" and raised.value.metadata["service"] == "diffusion"


async def test_a_short_deadline_is_deadline_exceeded_without_hanging(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator) as client:
        with pytest.raises(AdGenError) as raised:
            # 0.3 s cannot fit copy + generation + delivery; the call must end near the deadline.
            await asyncio.wait_for(client.create_ad(KEYWORD, timeout=0.3, **(SMALL | {"variant_count": 4})), timeout=10)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await _all_serving(services)


async def test_cli_creates_and_edits_end_to_end(services: Services, tmp_path: Path) -> None:
    runner = CliRunner()
    created = await asyncio.to_thread(
        runner.invoke,
        app,
        ["create", KEYWORD, "--out", str(tmp_path / "ad"), "--width", "128", "--height", "128", "--steps", "2",
         "--format", "png", "--target", services.orchestrator],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    manifest = json.loads((tmp_path / "ad" / "ad.json").read_text(encoding="utf-8"))
    assert HANGUL.search(manifest["copy"]["caption"]) and manifest["image_prompts"][0].isascii()
    photo = tmp_path / "ad" / manifest["images"][0]["file"]
    assert _decoded_size(photo.read_bytes(), "PNG") == (128, 128)

    edited = await asyncio.to_thread(
        runner.invoke,
        app,
        ["edit", str(photo), "커피를 딸기 라떼로 바꿔줘", "--out", str(tmp_path / "edit"), "--steps", "2",
         "--format", "png", "--target", services.orchestrator],
    )  # fmt: skip
    assert edited.exit_code == 0, edited.output
    edit_manifest = json.loads((tmp_path / "edit" / "edit.json").read_text(encoding="utf-8"))
    edited_photo = tmp_path / "edit" / edit_manifest["file"]
    assert _decoded_size(edited_photo.read_bytes(), "PNG") == (128, 128)

    # The files on disk carry their AI labels: IPTC digital source type in XMP, and PNG text.
    assert _labels(photo) == (IPTC + "trainedAlgorithmicMedia",) * 2
    assert _labels(edited_photo) == (IPTC + "compositeWithTrainedAlgorithmicMedia",) * 2
    with Image.open(photo) as image:
        assert image.info["Source"] == "flux2-klein-4b" and image.info["Description"] == manifest["image_prompts"][0]
        assert image.info["adgen:seed"] == str(manifest["seeds"][0])


def _labels(path: Path) -> tuple[str, str]:
    """(XMP Iptc4xmpExt:DigitalSourceType, PNG text adgen:digital_source_type) of an image file."""
    with Image.open(path) as image:
        xmp = image.info["XML:com.adobe.xmp"]
        match = re.search(r'Iptc4xmpExt:DigitalSourceType="([^"]+)"', xmp)
        assert match is not None, xmp
        return match.group(1), image.info["adgen:digital_source_type"]


async def test_jpeg_ads_carry_the_iptc_label_in_xmp(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(KEYWORD, **(SMALL | {"output_format": "jpeg"}))
    with Image.open(io.BytesIO(ad.images[0].image.data)) as image:
        assert image.format == "JPEG"
        assert f'DigitalSourceType="{IPTC}trainedAlgorithmicMedia"' in image.info["xmp"].decode()


async def test_four_variants_get_four_different_prompts_from_the_copywriter(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        ad = await client.create_ad(KEYWORD, **(SMALL | {"variant_count": 4, "width": 64, "height": 64}))
    prompts = [image.image_prompt for image in ad.images]
    assert len(set(prompts)) == 4, prompts


async def test_quality_preference_overlay_and_disclosure_on_the_real_models(services: Services) -> None:
    story: CreateAdOptions = {
        "placement": "story",
        "width": 144,
        "height": 256,
        "num_inference_steps": 2,
        "seed": 8,
        "output_format": "png",  # Lossless: only the drawn text differs between the two.
    }
    plain_options: CreateAdOptions = story | {"quality": "quality"}
    marked_options: CreateAdOptions = plain_options | {"overlay_headline": True, "ai_disclosure": True}
    async with AsyncAdGenClient(services.orchestrator, timeout=120) as client:
        plain = await client.create_ad(KEYWORD, **plain_options)
        marked = await client.create_ad(KEYWORD, **marked_options)
    assert plain.model_id == marked.model_id == "z-image-turbo"
    assert marked.copy.caption.endswith(AI_DISCLOSURE_LINE) and AI_DISCLOSURE_LINE not in plain.copy.caption
    with (
        Image.open(io.BytesIO(plain.images[0].image.data)) as before,
        Image.open(io.BytesIO(marked.images[0].image.data)) as after,
    ):
        changed = ImageChops.difference(before.convert("RGB"), after.convert("RGB")).getbbox()
    zone = safe_zone_for(ad_pb2.PLACEMENT_STORY).box(144, 256)
    # Headline at the top and badge at the bottom: the text spans the safe zone but stays inside it.
    assert changed is not None and zone.contains(Box(*changed))
    assert changed[1] < 256 // 3 and changed[3] > 256 * 2 // 3


async def test_stream_errors_name_fields_by_their_path_in_the_stream_request(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=30) as client:
        with pytest.raises(AdGenError) as raised:
            [event async for event in client.stream_create_ad("", width=10, height=10)]
    assert [v.field for v in raised.value.field_violations] == ["request.keyword", "request.width", "request.height"]
