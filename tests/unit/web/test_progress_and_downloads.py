"""Progress text/fractions and the download exports, without Streamlit."""

from __future__ import annotations

import json

from google.protobuf import duration_pb2

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_web.cli import APP_PATH, streamlit_args
from adgen_web.downloads import copy_as_json, copy_as_text, hashtags_for_display, image_mime, image_suffix
from adgen_web.progress import progress_fraction, progress_text

_S = progress_pb2


def test_queued_progress_shows_queue_position_and_eta_in_korean() -> None:
    queued = progress_pb2.Progress(
        stage=_S.PROGRESS_STAGE_QUEUED, queue_position=3, eta=duration_pb2.Duration(seconds=9)
    )
    assert progress_text(queued) == "대기 중 · 앞에 3건이 있어요 · 약 9초 남음"
    assert progress_text(progress_pb2.Progress(stage=_S.PROGRESS_STAGE_QUEUED)) == "대기 중 · 곧 시작해요"


def test_denoising_progress_shows_the_step_and_fills_the_bar_between_loading_and_decoding() -> None:
    half = progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DENOISING, step=2, total_steps=4)
    loading = progress_pb2.Progress(stage=_S.PROGRESS_STAGE_LOADING)
    decoding = progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DECODING)
    assert "2/4 단계" in progress_text(half)
    assert progress_fraction(loading) < progress_fraction(half) < progress_fraction(decoding) < 1.0
    assert progress_fraction(progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DONE)) == 1.0


def test_a_step_past_the_total_never_overfills_the_bar() -> None:
    odd = progress_pb2.Progress(stage=_S.PROGRESS_STAGE_DENOISING, step=9, total_steps=4)
    assert progress_fraction(odd) <= 1.0


def test_hashtags_are_shown_with_one_leading_hash() -> None:
    copy = ad_pb.AdCopy(hashtags=["딸기주스", "#카페"])
    assert hashtags_for_display(copy) == ["#딸기주스", "#카페"]


def test_copy_exports_keep_korean_readable_as_text_and_json() -> None:
    copy = ad_pb.AdCopy(headline="딸기 가득", caption="여름엔 딸기", hook="여름엔", hashtags=["딸기"])
    assert copy_as_text(copy) == "딸기 가득\n\n여름엔 딸기\n\n#딸기\n"
    document = json.loads(copy_as_json(copy))
    assert document["hashtags"] == ["#딸기"] and document["hook"] == "여름엔"
    assert "딸기 가득" in copy_as_json(copy)


def test_image_downloads_use_the_images_format_and_default_to_png() -> None:
    webp = image_pb2.Image(format=image_pb2.IMAGE_FORMAT_WEBP)
    assert (image_suffix(webp), image_mime(webp)) == ("webp", "image/webp")
    assert (image_suffix(image_pb2.Image()), image_mime(image_pb2.Image())) == ("png", "image/png")
    jpeg = image_pb2.Image(format=image_pb2.IMAGE_FORMAT_JPEG)
    assert (image_suffix(jpeg), image_mime(jpeg)) == ("jpg", "image/jpeg")


def test_launcher_runs_the_app_headless_and_passes_port_address_and_extra_options_through() -> None:
    args = streamlit_args(["--port", "9000", "--address", "0.0.0.0", "--theme.base=light"])
    assert args[:2] == ["run", str(APP_PATH)] and APP_PATH.is_file()
    assert {"--server.headless=true", "--server.port=9000", "--server.address=0.0.0.0"} <= set(args)
    assert args[-1] == "--theme.base=light"
