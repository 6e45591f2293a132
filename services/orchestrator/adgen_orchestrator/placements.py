"""Several placements of one ad: which sizes to deliver, and the images to render, variant by placement.

Every placement of a variant is rendered with the variant's seed and prompt, so the feed square, the feed
portrait and the story of variant i show the same scene framed for each shape (the related seeds Meta's and
Firefly's multi-size tools use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.product_scene import ProductPhoto, ProductScene, lay_out, scene_instruction
from adgen_orchestrator.sizing import DEFAULT_PLACEMENT, Size, placement_size


@dataclass(frozen=True)
class PlacementTarget:
    """One placement of the ad and the exact size it is delivered at."""

    placement: ad_pb2.Placement.ValueType
    size: Size


@dataclass(frozen=True)
class PlannedImage:
    """One image to render: a variant at a placement, with the products laid out for that placement's canvas."""

    variant_index: int
    target: PlacementTarget
    seed: int
    prompt: str
    scene: ProductScene | None = None


def placement_targets(
    request: ad_pb.CreateAdRequest, size: Size | None
) -> tuple[list[PlacementTarget], list[tuple[str, str]]]:
    """The placements to deliver, in the caller's order, and (field, description) for each rule broken.

    `size` is the delivered size validation made of width/height/placement (None when those were bad).
    Without `placements` the one target is `placement` at `size`; with them each placement is delivered at
    its own size, so an explicit width/height (which overrides the size) only goes with a single placement.
    """
    problems: list[tuple[str, str]] = []
    known = set(ad_pb2.Placement.values()) - {ad_pb2.PLACEMENT_UNSPECIFIED}
    seen: set[int] = set()
    for index, placement in enumerate(request.placements):
        if placement not in known:
            problems.append(
                (f"placements[{index}]", f"must be a placement (feed square, feed portrait or story); got {placement}")
            )
        elif placement in seen:
            problems.append(
                (f"placements[{index}]", f"repeats {ad_pb2.Placement.Name(placement)}; list each placement once")
            )
        seen.add(placement)
    if request.placements and request.placement and request.placement not in request.placements:
        problems.append(("placement", "must be one of `placements` when both are set"))
    if len(request.placements) > 1 and (request.width or request.height):
        problems.append(("width", "cannot be set with several placements: each is delivered at its own size"))
    if problems:
        return [], problems
    explicit = bool(request.width or request.height)
    if request.placements and not explicit:
        return [PlacementTarget(p, placement_size(p)) for p in request.placements], []
    if size is None:
        return [], []
    # One placement: an explicit width/height overrides its size, as it overrides `placement`'s.
    only = request.placements[0] if request.placements else request.placement or DEFAULT_PLACEMENT
    return [PlacementTarget(only, size)], []


def plan_images(
    prompts: Sequence[str],
    targets: Sequence[PlacementTarget],
    seed_of: Sequence[int],
    products: Sequence[ProductPhoto] = (),
) -> list[PlannedImage]:
    """Every variant at every placement, variant by variant: variant i has prompt i and seed i everywhere."""
    scenes = {target: lay_out(products, target.size, target.placement) if products else None for target in targets}
    return [
        PlannedImage(index, target, seed_of[index], prompt, scenes[target])
        for index, prompt in enumerate(prompts)
        for target in targets
    ]


def diffusion_request(
    planned: PlannedImage,
    *,
    model_id: str,
    render_size: Size,
    num_inference_steps: int | None,
    request_id: str,
    output_format: image_pb2.ImageFormat.ValueType,
) -> df_pb.GenerateRequest | df_pb.EditRequest:
    """The diffusion job of one planned image: text-to-image, or, with products, an edit of the placement's
    canvas (the products laid out on it) at the render size, asked to keep the products and draw the scene."""
    request: df_pb.GenerateRequest | df_pb.EditRequest
    if planned.scene is None:
        request = df_pb.GenerateRequest(prompt=planned.prompt)
    else:
        request = df_pb.EditRequest(
            image=image_pb2.Image(data=planned.scene.reference_png, format=image_pb2.IMAGE_FORMAT_PNG),
            instruction=scene_instruction(planned.prompt, planned.scene),
        )
    # The fields both jobs share, named alike in both messages.
    request.model_id = model_id
    request.width, request.height = render_size.width, render_size.height
    if num_inference_steps is not None:
        request.num_inference_steps = num_inference_steps
    request.seed = planned.seed
    request.image_count = 1
    request.output_format = output_format
    request.request_id = request_id
    return request
