"""A brand kit is checked field by field: colours, logo, font and name, each bad one named."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, error_reason_pb2, image_pb2
from adgen_orchestrator.brand import (
    HEADLINE_FONT_FILES,
    LOGO_MAX_BYTES,
    Brand,
    contrast_ratio,
    parse_colour,
    read_brand,
    text_colour_on,
)
from adgen_orchestrator.overlay import PRETENDARD_DIRS, find_korean_font, headline_font_path
from adgen_orchestrator.validation import parse_create_request
from adgen_runtime.errors import InvalidArgument, Reason

_R = error_reason_pb2


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def logo_png(size: tuple[int, int] = (64, 32), mode: str = "RGBA") -> bytes:
    colour = (200, 20, 60, 255) if mode == "RGBA" else (200, 20, 60)
    return _png(Image.new(mode, size, colour))


def read(kit: ad_pb2.BrandKit) -> tuple[Brand, dict[str, tuple[str, Reason]]]:
    violations: dict[str, tuple[str, Reason]] = {}

    def report(field: str, description: str, reason: Reason) -> None:
        violations[field] = (description, reason)

    return read_brand(kit, report), violations


def test_a_complete_kit_becomes_a_brand_with_its_colours_logo_and_font() -> None:
    brand, violations = read(
        ad_pb2.BrandKit(
            name="  하루  카페 ",
            logo=image_pb2.Image(data=logo_png()),
            primary_color="#FF6B81",
            accent_color="#ffffff",
            headline_font="Pretendard-Black",
        )
    )
    assert violations == {}
    assert brand.name == "하루 카페"
    assert brand.primary_color == (0xFF, 0x6B, 0x81) and brand.accent_color == (255, 255, 255)
    assert brand.headline_font == "pretendard-black"
    assert brand.logo is not None and brand.logo.mode == "RGBA" and brand.logo.size == (64, 32)


def test_an_empty_kit_is_a_brand_with_nothing_to_change() -> None:
    brand, violations = read(ad_pb2.BrandKit())
    assert violations == {}
    assert (brand.name, brand.logo, brand.primary_color, brand.accent_color, brand.headline_font) == (
        "",
        None,
        None,
        None,
        "",
    )


@pytest.mark.parametrize("colour", ["FF6B81", "#FF6B8", "#FF6B811", "#GG0000", "red", "#ff6b81 "])
def test_colours_other_than_hash_rrggbb_are_refused(colour: str) -> None:
    _, violations = read(ad_pb2.BrandKit(primary_color=colour, accent_color=colour))
    assert set(violations) == {"brand.primary_color", "brand.accent_color"}
    assert "#RRGGBB" in violations["brand.primary_color"][0]
    assert violations["brand.primary_color"][1] == _R.ERROR_REASON_INVALID_ARGUMENT
    assert parse_colour(colour) is None


def test_an_unknown_headline_font_is_refused_naming_the_shipped_ones() -> None:
    _, violations = read(ad_pb2.BrandKit(headline_font="comic-sans"))
    description, _ = violations["brand.headline_font"]
    assert all(font_id in description for font_id in HEADLINE_FONT_FILES)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (logo_png(mode="RGB"), "opaque"),
        (_png(Image.new("RGBA", (8, 8))), "between 16 and 4096"),
        (_png(Image.new("RGBA", (400, 20))), "aspect ratio"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "PNG"),
        (logo_png()[:-30], "truncated or corrupt"),
        (b"x" * (LOGO_MAX_BYTES + 1), "larger than the limit of 1 MiB"),
    ],
    ids=["opaque", "tiny", "hairline", "not-png", "truncated", "too-large"],
)
def test_a_logo_that_cannot_be_drawn_is_an_invalid_image(data: bytes, words: str) -> None:
    _, violations = read(ad_pb2.BrandKit(logo=image_pb2.Image(data=data)))
    description, reason = violations["brand.logo"]
    assert words in description
    assert reason == _R.ERROR_REASON_INVALID_IMAGE


def test_a_jpeg_logo_is_refused_as_not_a_png() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    _, violations = read(ad_pb2.BrandKit(logo=image_pb2.Image(data=buffer.getvalue())))
    assert "JPEG is not accepted" in violations["brand.logo"][0]


def test_a_palette_png_with_a_transparent_index_is_accepted_as_rgba() -> None:
    palette = Image.new("P", (32, 32), 1)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    brand, violations = read(ad_pb2.BrandKit(logo=image_pb2.Image(data=buffer.getvalue())))
    assert violations == {}
    assert brand.logo is not None and brand.logo.mode == "RGBA"


@pytest.mark.parametrize("name", ["하루\x00카페", "하루\u202e카페", "가" * 51])
def test_brand_names_with_control_characters_or_too_long_are_refused(name: str) -> None:
    _, violations = read(ad_pb2.BrandKit(name=name))
    assert "brand.name" in violations


def test_text_keeps_the_accent_only_when_it_reads_on_the_panel() -> None:
    navy, white, pale_yellow = (20, 30, 90), (255, 255, 255), (250, 240, 190)
    assert text_colour_on(navy, white) == white
    # Pale yellow on white is about 1.1:1: unreadable, so the text turns black.
    assert contrast_ratio(pale_yellow, white) < 1.5
    assert text_colour_on(white, pale_yellow) == (0, 0, 0)
    assert text_colour_on(navy, None) == white


@pytest.mark.parametrize("font_id", sorted(HEADLINE_FONT_FILES))
def test_every_offered_headline_font_is_installed_with_hangul(font_id: str) -> None:
    path = headline_font_path(font_id)
    assert path.parent in PRETENDARD_DIRS
    assert find_korean_font(path).path == path


def test_the_docker_image_ships_every_offered_headline_font() -> None:
    dockerfile = (Path(__file__).resolve().parents[3] / "docker" / "Dockerfile").read_text()
    orchestrator_stage = dockerfile.split("FROM source AS orchestrator", 1)[1].split("\nFROM ", 1)[0]
    for file_name in HEADLINE_FONT_FILES.values():
        assert f"/static/{file_name}" in orchestrator_stage
    assert "/usr/local/share/fonts/pretendard/" in orchestrator_stage and str(PRETENDARD_DIRS[1]).endswith("pretendard")


def test_create_ad_names_bad_brand_fields_under_the_stream_prefix() -> None:
    request = ad_pb.CreateAdRequest(keyword="딸기", brand=ad_pb2.BrandKit(accent_color="#12345"))
    with pytest.raises(InvalidArgument) as raised:
        parse_create_request(request, default_model_id="m", request_id="r", field_prefix="request.")
    assert [v.field for v in raised.value.field_violations] == ["request.brand.accent_color"]


def test_create_ad_spec_carries_the_brand_and_none_without_one() -> None:
    kit = ad_pb2.BrandKit(name="하루카페", primary_color="#000000")
    spec = parse_create_request(ad_pb.CreateAdRequest(keyword="딸기", brand=kit), default_model_id="m", request_id="r")
    assert spec.brand is not None and spec.brand.name == "하루카페" and spec.brand.primary_color == (0, 0, 0)
    assert (
        parse_create_request(ad_pb.CreateAdRequest(keyword="딸기"), default_model_id="m", request_id="r").brand is None
    )
