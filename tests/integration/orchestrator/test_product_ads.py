"""CreateAd with product photos and several placements: the real orchestrator (gRPC, HTTP, CLI) on recording fakes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_client import AsyncAdGenClient, BadRequest
from adgen_client.cli import app
from adgen_orchestrator.product_scene import CANVAS_COLOR
from adgen_orchestrator.sizing import PLACEMENT_SIZES, Size
from tests.integration.orchestrator.conftest import FakeStack
from tests.support.product_photos import cut_out_png, opaque_jpeg, product_unchanged, scene_for

KEYWORD = "여름 느낌 딸기 생과일 주스"
SQUARE, PORTRAIT, STORY = ad_pb2.PLACEMENT_FEED_SQUARE, ad_pb2.PLACEMENT_FEED_PORTRAIT, ad_pb2.PLACEMENT_STORY
PNG = image_pb2.IMAGE_FORMAT_PNG


def edit_calls(stack: FakeStack) -> list[df_pb.EditRequest]:
    return [call.request for call in stack.diffusion.calls if isinstance(call.request, df_pb.EditRequest)]


async def test_a_cut_out_product_is_kept_pixel_for_pixel_in_every_variant_and_placement(fake_stack: FakeStack) -> None:
    photo = cut_out_png()
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        ad = await client.create_ad(
            KEYWORD,
            product_photos=[photo],
            placements=["feed-square", "story"],
            variant_count=2,
            seed=10,
            output_format="png",
        )
    assert [(image.variant_index, image.placement) for image in ad.images] == [
        (0, SQUARE),
        (0, STORY),
        (1, SQUARE),
        (1, STORY),
    ]
    for image in ad.images:
        size = PLACEMENT_SIZES[image.placement]
        assert (image.image.width, image.image.height) == (size.width, size.height)
        assert product_unchanged(image.image.data, photo, image.placement)
    # Related seeds: variant i has seed + i and the same prompt in every placement.
    assert [image.seed for image in ad.images] == [10, 10, 11, 11]
    assert ad.images[0].image_prompt == ad.images[1].image_prompt != ad.images[2].image_prompt
    assert ad.model_id == "flux2-klein-4b"
    # The copywriter was told a product photo fills the image, and writes only the scene around it.
    assert fake_stack.copywriter.calls[0].request.product_photo
    # The text-to-image model's reference-image edit saw each placement's canvas, at a legal size of its aspect.
    edits = edit_calls(fake_stack)
    assert Counter((edit.model_id, edit.seed) for edit in edits) == {
        ("flux2-klein-4b", 10): 2,
        ("flux2-klein-4b", 11): 2,
    }
    for edit in edits:
        with Image.open(io.BytesIO(edit.image.data)) as reference:
            canvas = reference.convert("RGB")
        placement = SQUARE if canvas.size == (1080, 1080) else STORY
        assert canvas.size == (PLACEMENT_SIZES[placement].width, PLACEMENT_SIZES[placement].height)
        assert canvas.getpixel((2, 2)) == CANVAS_COLOR
        assert edit.width % 16 == 0 and edit.height % 16 == 0
        assert edit.width / edit.height == pytest.approx(canvas.width / canvas.height, rel=0.02)
        assert "reference image exactly as it is" in edit.instruction


async def test_an_opaque_photo_is_padded_to_the_placement_and_sent_to_the_edit_model(fake_stack: FakeStack) -> None:
    photo = opaque_jpeg()
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        ad = await client.create_ad(KEYWORD, product_photos=[photo], placement="story", seed=3)
    (image,) = ad.images
    assert (image.image.width, image.image.height, image.placement) == (1080, 1920, STORY)
    assert ad.model_id == "qwen-image-edit-2511"
    (edit,) = edit_calls(fake_stack)
    assert edit.model_id == "qwen-image-edit-2511" and "Picture 1 exactly as photographed" in edit.instruction
    with Image.open(io.BytesIO(edit.image.data)) as reference:
        canvas = reference.convert("RGB")
    # The photo at its own size in a canvas of the story's shape: the scene is extended, the photo not stretched.
    (item,) = scene_for(photo, STORY).placed
    assert canvas.size == (1080, 1920) and (item.box.width, item.box.height) == (300, 200)
    assert canvas.getpixel((item.box.left + 150, item.box.top + 100)) == pytest.approx((30, 120, 200), abs=3)
    assert canvas.getpixel((item.box.left - 5, item.box.top + 100)) == CANVAS_COLOR


async def test_a_text_to_image_model_without_edits_hands_products_to_the_edit_model(fake_stack: FakeStack) -> None:
    photo = cut_out_png()
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        ad = await client.create_ad(KEYWORD, product_photos=[photo], model_id="z-image-turbo", output_format="png")
    assert ad.model_id == "qwen-image-edit-2511"
    assert [edit.model_id for edit in edit_calls(fake_stack)] == ["qwen-image-edit-2511"]
    # Cut out, so pasted back exactly whichever model drew the scene.
    assert product_unchanged(ad.images[0].image.data, photo, SQUARE)


async def test_several_placements_without_products_generate_each_at_its_own_size(fake_stack: FakeStack) -> None:
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        ad = await client.create_ad(KEYWORD, placements=["story", "feed-portrait"], seed=4)
    assert [(image.placement, image.image.width, image.image.height) for image in ad.images] == [
        (STORY, 1080, 1920),
        (PORTRAIT, 1080, 1350),
    ]
    generates = [call.request for call in fake_stack.diffusion.calls]
    assert all(isinstance(request, df_pb.GenerateRequest) and request.seed == 4 for request in generates)
    assert not fake_stack.copywriter.calls[0].request.product_photo


@pytest.mark.parametrize(
    ("options", "reason", "fields"),
    [
        ({"product_photos": [cut_out_png(), b"not a photo"]}, "INVALID_IMAGE", ["product_photos[1].data"]),
        ({"product_photos": [cut_out_png()] * 4}, "INVALID_ARGUMENT", ["product_photos"]),
        ({"placements": ["story", "story"]}, "INVALID_ARGUMENT", ["placements[1]"]),
        ({"placements": ["story", "feed-square"], "placement": "feed-portrait"}, "INVALID_ARGUMENT", ["placement"]),
        ({"placements": ["story", "feed-square"], "width": 128, "height": 128}, "INVALID_ARGUMENT", ["width"]),
    ],
)
async def test_bad_product_photos_and_placements_are_refused_before_any_downstream_call(
    fake_stack: FakeStack, options: dict[str, object], reason: str, fields: list[str]
) -> None:
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        with pytest.raises(BadRequest) as raised:
            await client.create_ad(KEYWORD, **options)  # type: ignore[arg-type]
    assert raised.value.reason == reason
    assert [violation.field for violation in raised.value.field_violations] == fields
    assert fake_stack.copywriter.calls == [] and fake_stack.diffusion.calls == []


async def test_product_photos_and_placements_work_over_http_json_with_base64_bytes(fake_stack: FakeStack) -> None:
    photo = cut_out_png()
    body = {
        "keyword": KEYWORD,
        "placements": ["PLACEMENT_FEED_SQUARE", "PLACEMENT_STORY"],
        "productPhotos": [{"data": base64.b64encode(photo).decode()}],
        "outputFormat": "IMAGE_FORMAT_PNG",
        "seed": "8",
    }
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=60) as http:
        reply = await http.post("/adgen.ad.v1.AdService/CreateAd", json=body)
    assert reply.status_code == 200, reply.text
    images = reply.json()["images"]
    assert [(image["placement"], image["image"]["width"], image["image"]["height"]) for image in images] == [
        ("PLACEMENT_FEED_SQUARE", 1080, 1080),
        ("PLACEMENT_STORY", 1080, 1920),
    ]
    for image, placement in zip(images, (SQUARE, STORY), strict=True):
        assert product_unchanged(base64.b64decode(image["image"]["data"]), photo, placement)


async def test_product_photos_and_placements_work_over_http_binary_proto(fake_stack: FakeStack) -> None:
    photo = cut_out_png()
    request = ad_pb.CreateAdRequest(
        keyword=KEYWORD,
        placements=[PORTRAIT, SQUARE],
        product_photos=[image_pb2.Image(data=photo)],
        output_format=PNG,
    )
    async with httpx.AsyncClient(base_url=fake_stack.http_url, timeout=60) as http:
        reply = await http.post(
            "/adgen.ad.v1.AdService/CreateAd",
            content=request.SerializeToString(),
            headers={"content-type": "application/proto"},
        )
    assert reply.status_code == 200, reply.text
    ad = ad_pb.CreateAdResponse.FromString(reply.content)
    assert [image.placement for image in ad.images] == [PORTRAIT, SQUARE]
    assert all(product_unchanged(image.image.data, photo, image.placement) for image in ad.images)


async def test_the_cli_takes_product_photos_and_repeated_placements(fake_stack: FakeStack, tmp_path: Path) -> None:
    photo = tmp_path / "juice.png"
    photo.write_bytes(cut_out_png())
    out = tmp_path / "ad"
    arguments = [
        "create", KEYWORD, "--product", str(photo), "--placement", "feed-square", "--placement", "story",
        "--format", "png", "--seed", "2", "--out", str(out), "--target", fake_stack.target,
    ]  # fmt: skip
    result = await asyncio.to_thread(CliRunner().invoke, app, arguments)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "ad.json").read_text(encoding="utf-8"))
    assert manifest["placements"] == ["feed-square", "story"] and manifest["product_photos"] == [str(photo)]
    assert [(image["file"], image["placement"]) for image in manifest["images"]] == [
        ("ad-1-feed-square.png", "feed-square"),
        ("ad-1-story.png", "story"),
    ]
    assert manifest["seeds"] == [2]
    for image, placement in zip(manifest["images"], (SQUARE, STORY), strict=True):
        data = (out / image["file"]).read_bytes()
        assert Image.open(io.BytesIO(data)).size == (image["width"], image["height"])
        assert product_unchanged(data, photo.read_bytes(), placement)
    assert Size(manifest["images"][1]["width"], manifest["images"][1]["height"]) == PLACEMENT_SIZES[STORY]


async def test_a_request_id_replays_the_same_product_photos_and_refuses_other_ones(fake_stack: FakeStack) -> None:
    photo, other = cut_out_png(), cut_out_png(width=91)
    async with AsyncAdGenClient(fake_stack.target, timeout=60) as client:
        first = await client.create_ad(KEYWORD, product_photos=[photo], request_id="product-1", seed=1)
        calls = len(fake_stack.diffusion.calls)
        again = await client.create_ad(KEYWORD, product_photos=[photo], request_id="product-1", seed=1)
        assert again == first and len(fake_stack.diffusion.calls) == calls  # Replayed, not drawn again.
        with pytest.raises(BadRequest) as raised:
            await client.create_ad(KEYWORD, product_photos=[other], request_id="product-1", seed=1)
    assert raised.value.reason == "REQUEST_ID_REUSED"
