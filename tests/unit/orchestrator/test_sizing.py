"""Placement presets and the legal generation size nearest a delivered size."""

from __future__ import annotations

import pytest

from adgen.type.v1 import ad_pb2
from adgen_orchestrator.sizing import Size, SizeRules, generation_size, placement_size

FLUX = SizeRules(multiple=16, min_side=256, max_side=2048)


@pytest.mark.parametrize(
    ("placement", "size"),
    [
        (ad_pb2.PLACEMENT_UNSPECIFIED, Size(1080, 1080)),
        (ad_pb2.PLACEMENT_FEED_SQUARE, Size(1080, 1080)),
        (ad_pb2.PLACEMENT_FEED_PORTRAIT, Size(1080, 1350)),
        (ad_pb2.PLACEMENT_STORY, Size(1080, 1920)),
    ],
)
def test_placements_deliver_instagram_sizes(placement: ad_pb2.Placement.ValueType, size: Size) -> None:
    assert placement_size(placement) == size


@pytest.mark.parametrize(
    ("delivered", "generated"),
    [
        (Size(1080, 1080), Size(1088, 1088)),
        (Size(1080, 1350), Size(1088, 1360)),
        (Size(1080, 1920), Size(1088, 1920)),
        (Size(512, 512), Size(512, 512)),  # already legal: unchanged
        (Size(777, 1333), Size(784, 1344)),
    ],
)
def test_generation_size_rounds_each_side_up_to_the_models_multiple(delivered: Size, generated: Size) -> None:
    # The render covers the delivered frame by less than a step a side, so a centre crop cuts it exactly.
    assert generation_size(delivered, FLUX) == generated


@pytest.mark.parametrize("delivered", [Size(64, 64), Size(100, 300), Size(2048, 64), Size(777, 1333), Size(1080, 1920)])
@pytest.mark.parametrize("rules", [FLUX, SizeRules(multiple=16, min_side=32, max_side=2048), SizeRules(64, 256, 1024)])
def test_generation_size_is_always_legal_for_the_model(delivered: Size, rules: SizeRules) -> None:
    size = generation_size(delivered, rules)
    for side in (size.width, size.height):
        assert side % rules.multiple == 0
        assert rules.min_side <= side <= rules.max_side


def test_small_deliverables_are_generated_at_least_at_the_model_minimum() -> None:
    assert generation_size(Size(128, 128), FLUX) == Size(256, 256)


def test_large_deliverables_are_generated_within_the_model_maximum_keeping_the_aspect() -> None:
    size = generation_size(Size(2048, 2048), SizeRules(multiple=16, min_side=256, max_side=1024))
    assert size == Size(1024, 1024)


def test_every_placement_is_rendered_covering_its_size_by_under_one_step_a_side() -> None:
    for placement in (ad_pb2.PLACEMENT_FEED_SQUARE, ad_pb2.PLACEMENT_FEED_PORTRAIT, ad_pb2.PLACEMENT_STORY):
        delivered = placement_size(placement)
        generated = generation_size(delivered, FLUX)
        assert 0 <= generated.width - delivered.width < FLUX.multiple
        assert 0 <= generated.height - delivered.height < FLUX.multiple


def test_a_shape_beyond_the_models_sides_falls_back_to_the_nearest_aspect() -> None:
    assert generation_size(Size(2048, 64), FLUX) == Size(2048, 256)
