"""The SDK's product photo, placements and brand options, as they land in the CreateAdRequest."""

from __future__ import annotations

from pathlib import Path

import pytest

from adgen.type.v1 import ad_pb2
from adgen_client import Brand
from adgen_client.cli import option_name
from adgen_client.requests import create_ad_request


def test_product_photos_are_read_from_paths_or_taken_as_bytes_in_order(tmp_path: Path) -> None:
    path = tmp_path / "juice.png"
    path.write_bytes(b"first photo")
    request = create_ad_request("딸기 주스", product_photos=[path, b"second photo", str(path)])
    assert [photo.data for photo in request.product_photos] == [b"first photo", b"second photo", b"first photo"]


def test_placements_take_names_or_enum_values() -> None:
    request = create_ad_request("딸기 주스", placements=["feed-square", ad_pb2.PLACEMENT_STORY, "FEED-PORTRAIT"])
    assert list(request.placements) == [
        ad_pb2.PLACEMENT_FEED_SQUARE,
        ad_pb2.PLACEMENT_STORY,
        ad_pb2.PLACEMENT_FEED_PORTRAIT,
    ]


def test_an_unknown_placement_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown placement 'reel'; choose from feed-square, feed-portrait, story"):
        create_ad_request("딸기 주스", placements=["reel"])


def test_a_single_photo_or_placement_where_a_list_belongs_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="product_photos takes a list"):
        create_ad_request("딸기 주스", product_photos=b"one photo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="placements takes a list"):
        create_ad_request("딸기 주스", placements="story")


def test_a_brand_becomes_the_brand_kit_with_its_logo_file_read(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"logo bytes")
    brand = Brand(
        name="하루카페", logo=logo, primary_color="#112233", accent_color="#FFCC00", headline_font="pretendard-black"
    )
    kit = create_ad_request("딸기 주스", brand=brand).brand
    assert (kit.name, kit.logo.data, kit.primary_color, kit.accent_color, kit.headline_font) == (
        "하루카페",
        b"logo bytes",
        "#112233",
        "#FFCC00",
        "pretendard-black",
    )
    assert not create_ad_request("딸기 주스", brand=Brand(name="하루카페")).brand.HasField("logo")
    message = ad_pb2.BrandKit(name="직접 만든 키트")
    assert create_ad_request("딸기 주스", brand=message).brand == message


def test_without_the_new_options_the_request_is_as_before() -> None:
    request = create_ad_request("딸기 주스")
    assert not request.product_photos and not request.placements and not request.HasField("brand")


def test_the_cli_names_a_refused_product_photo_by_its_place_on_the_command_line() -> None:
    assert option_name("request.product_photos[1].data") == "--product #2"
    assert option_name("placements") == "--placement" and option_name("placements[0]") == "--placement #1"
