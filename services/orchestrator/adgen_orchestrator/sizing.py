"""Instagram placement sizes and the legal generation size nearest a delivered size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adgen.type.v1 import ad_pb2

MIN_DELIVERED_SIDE = 64
MAX_DELIVERED_SIDE = 2048
# A render that covers the delivered frame by at most this much a side is centre-cropped to it (no resample, the
# aspect never distorted); the size grid's rounding up of an Instagram size costs under 1 %.
MAX_CROP = 1.05


@dataclass(frozen=True)
class Size:
    """A width and height in pixels."""

    width: int
    height: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class SizeRules:
    """What sizes an image model accepts: each side a multiple, within a range."""

    multiple: int = 16
    min_side: int = 256
    max_side: int = 2048


DEFAULT_PLACEMENT = ad_pb2.PLACEMENT_FEED_SQUARE
PLACEMENT_SIZES: dict[ad_pb2.Placement.ValueType, Size] = {
    ad_pb2.PLACEMENT_FEED_SQUARE: Size(1080, 1080),
    ad_pb2.PLACEMENT_FEED_PORTRAIT: Size(1080, 1350),
    ad_pb2.PLACEMENT_STORY: Size(1080, 1920),
}


def placement_size(placement: ad_pb2.Placement.ValueType) -> Size:
    """The delivered size of a placement; unspecified means a square feed post."""
    return PLACEMENT_SIZES[placement or DEFAULT_PLACEMENT]


def generation_size(delivered: Size, rules: SizeRules) -> Size:
    """The legal size the model renders for a delivered size.

    Where each delivered side rounded up to the model's multiple is a legal side at most MAX_CROP larger, that:
    the render covers the delivered frame by less than one step a side, and a centre crop (no resample, the
    aspect never distorted) cuts it to the exact size. Otherwise (a small size, where one step is a large share;
    a shape beyond the model's sides, such as 2048x64 from sides of 256-2048) the legal size whose aspect is
    nearest, at about the delivered area, which `adgen_orchestrator.imaging` fits (cropped to the aspect, never
    stretched, then resized).
    """
    covering = Size(_rounded_up(delivered.width, rules.multiple), _rounded_up(delivered.height, rules.multiple))
    sides = ((covering.width, delivered.width), (covering.height, delivered.height))
    if all(rules.min_side <= side <= rules.max_side and side <= wanted * MAX_CROP for side, wanted in sides):
        return covering
    return _nearest_shape(delivered, rules)


def _rounded_up(length: int, multiple: int) -> int:
    return math.ceil(length / multiple) * multiple


def _nearest_shape(delivered: Size, rules: SizeRules) -> Size:
    """The legal size whose aspect is nearest the delivered one, at about the delivered area."""
    scale = 1.0
    if max(delivered.width, delivered.height) > rules.max_side:
        scale = rules.max_side / max(delivered.width, delivered.height)
    if min(delivered.width, delivered.height) * scale < rules.min_side:
        scale = rules.min_side / min(delivered.width, delivered.height)
    target_area = delivered.area * scale * scale
    candidates = [
        Size(width, height)
        for width in _legal_sides_near(delivered.width * scale, rules)
        for height in _legal_sides_near(width / delivered.aspect, rules)
    ]

    def badness(size: Size) -> tuple[float, bool, float]:
        # Aspect first; then prefer shrinking to enlarging (sharper); then the closest area.
        aspect_error = round(abs(math.log(size.aspect / delivered.aspect)), 4)
        return aspect_error, size.area < target_area, abs(size.area - target_area)

    return min(candidates, key=badness)


def _legal_sides_near(length: float, rules: SizeRules) -> list[int]:
    """Multiples of the rule's step around `length`, clamped to the legal range."""
    lowest = math.ceil(rules.min_side / rules.multiple) * rules.multiple
    highest = (rules.max_side // rules.multiple) * rules.multiple
    below = math.floor(length / rules.multiple)
    sides = {min(max(step * rules.multiple, lowest), highest) for step in range(below - 1, below + 3)}
    return sorted(sides)
