"""Instagram placement sizes and the legal generation size nearest a delivered size."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adgen.type.v1 import ad_pb2

MIN_DELIVERED_SIDE = 64
MAX_DELIVERED_SIDE = 2048


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
    """The legal size whose aspect is nearest the delivered one, at about the delivered area.

    The model then renders the composition the delivered frame shows, and a small resize brings
    it to the exact delivered size. A shape beyond the model's sides (2048x64 from sides of
    256-2048) is rendered at the nearest shape it can do and cropped to fit, never stretched.
    """
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
