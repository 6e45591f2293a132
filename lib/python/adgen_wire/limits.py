"""Limits of the contract that callers and servers check alike; the protos document the same numbers."""

from __future__ import annotations

# Images per call: CreateAd variants, copywriter prompt variants, diffusion image_count. Four keeps a story
# ad of four 1080×1920 images inside one message and one GPU job inside a caller's patience.
MAX_VARIANTS = 4
