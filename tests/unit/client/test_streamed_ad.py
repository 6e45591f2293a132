"""The SDK puts streamed image bytes back into the stream's result, and refuses a result that refers to nothing."""

from __future__ import annotations

import pytest

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_client.progress import StreamedAd


def _image(index: int, data: bytes, placement: ad_pb2.Placement.ValueType = ad_pb2.PLACEMENT_STORY) -> ad_pb.AdImage:
    return ad_pb.AdImage(
        variant_index=index, placement=placement, image=image_pb2.Image(data=data, format=image_pb2.IMAGE_FORMAT_JPEG)
    )


def _referring(*images: ad_pb.AdImage) -> ad_pb.StreamCreateAdResponse:
    result = ad_pb.CreateAdResponse(images=images)
    for image in result.images:
        image.image.ClearField("data")
        image.data_in_stream = True
    return ad_pb.StreamCreateAdResponse(result=result)


def test_a_referring_result_gets_each_images_bytes_by_variant_and_placement() -> None:
    streamed = StreamedAd()
    first, second = _image(0, b"zero"), _image(1, b"one")
    other_placement = _image(0, b"zero-square", ad_pb2.PLACEMENT_FEED_SQUARE)
    for image in (second, other_placement, first):
        streamed.whole(ad_pb.StreamCreateAdResponse(image=image))
    whole = streamed.whole(_referring(first, second, other_placement)).result
    assert [image.image.data for image in whole.images] == [b"zero", b"one", b"zero-square"]
    assert not any(image.data_in_stream for image in whole.images)
    assert list(whole.images) == [first, second, other_placement]


def test_a_whole_result_is_left_as_it_came() -> None:
    event = ad_pb.StreamCreateAdResponse(result=ad_pb.CreateAdResponse(images=[_image(0, b"whole")]))
    assert StreamedAd().whole(event).result.images[0].image.data == b"whole"


def test_a_result_referring_to_an_image_never_streamed_is_refused() -> None:
    with pytest.raises(LookupError, match="variant 1"):
        StreamedAd().whole(_referring(_image(1, b"lost")))
