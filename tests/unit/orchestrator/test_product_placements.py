"""Several placements in one CreateAd: the rules, the delivered sizes, and the images planned per variant."""

from __future__ import annotations

from PIL import Image

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.diffusion.v1 import diffusion_service_pb2 as df_pb
from adgen.type.v1 import ad_pb2, image_pb2
from adgen_orchestrator.placements import (
    PlacementTarget,
    PlannedImage,
    diffusion_request,
    placement_targets,
    plan_images,
)
from adgen_orchestrator.product_scene import ProductPhoto
from adgen_orchestrator.sizing import Size

SQUARE, PORTRAIT, STORY = ad_pb2.PLACEMENT_FEED_SQUARE, ad_pb2.PLACEMENT_FEED_PORTRAIT, ad_pb2.PLACEMENT_STORY
RAW = image_pb2.IMAGE_FORMAT_RAW_RGB


def test_without_placements_the_one_target_is_the_placement_at_the_validated_size() -> None:
    request = ad_pb.CreateAdRequest(keyword="딸기", placement=STORY)
    assert placement_targets(request, Size(1080, 1920)) == ([PlacementTarget(STORY, Size(1080, 1920))], [])
    unset = ad_pb.CreateAdRequest(keyword="딸기", width=300, height=200)
    assert placement_targets(unset, Size(300, 200)) == ([PlacementTarget(SQUARE, Size(300, 200))], [])


def test_each_placement_is_delivered_at_its_own_size_in_the_callers_order() -> None:
    request = ad_pb.CreateAdRequest(keyword="딸기", placements=[STORY, SQUARE, PORTRAIT], placement=SQUARE)
    targets, problems = placement_targets(request, Size(1080, 1080))
    assert problems == []
    assert targets == [
        PlacementTarget(STORY, Size(1080, 1920)),
        PlacementTarget(SQUARE, Size(1080, 1080)),
        PlacementTarget(PORTRAIT, Size(1080, 1350)),
    ]


def test_repeated_unknown_and_unspecified_placements_are_named_by_index() -> None:
    request = ad_pb.CreateAdRequest(
        keyword="딸기", placements=[SQUARE, SQUARE, ad_pb2.PLACEMENT_UNSPECIFIED, ad_pb2.Placement.ValueType(9)]
    )
    targets, problems = placement_targets(request, Size(1080, 1080))
    assert targets == []
    assert [field for field, _ in problems] == ["placements[1]", "placements[2]", "placements[3]"]
    assert "repeats PLACEMENT_FEED_SQUARE" in problems[0][1] and "got 9" in problems[2][1]


def test_a_single_placement_outside_the_list_is_refused() -> None:
    request = ad_pb.CreateAdRequest(keyword="딸기", placements=[SQUARE, STORY], placement=PORTRAIT)
    assert placement_targets(request, Size(1080, 1350))[1] == [
        ("placement", "must be one of `placements` when both are set")
    ]


def test_an_explicit_size_goes_with_one_placement_only() -> None:
    several = ad_pb.CreateAdRequest(keyword="딸기", placements=[SQUARE, STORY], width=128, height=128)
    assert [field for field, _ in placement_targets(several, Size(128, 128))[1]] == ["width"]
    one = ad_pb.CreateAdRequest(keyword="딸기", placements=[STORY], width=128, height=128)
    assert placement_targets(one, Size(128, 128)) == ([PlacementTarget(STORY, Size(128, 128))], [])


def test_every_placement_of_a_variant_shares_its_seed_and_prompt() -> None:
    targets = [PlacementTarget(SQUARE, Size(1080, 1080)), PlacementTarget(STORY, Size(1080, 1920))]
    planned = plan_images(["a beach", "a cafe"], targets, [41, 42])
    assert [(p.variant_index, p.target.placement, p.seed, p.prompt) for p in planned] == [
        (0, SQUARE, 41, "a beach"),
        (0, STORY, 41, "a beach"),
        (1, SQUARE, 42, "a cafe"),
        (1, STORY, 42, "a cafe"),
    ]
    assert all(p.scene is None for p in planned)


def test_products_are_laid_out_once_per_placement_canvas() -> None:
    targets = [PlacementTarget(SQUARE, Size(1080, 1080)), PlacementTarget(STORY, Size(1080, 1920))]
    product = ProductPhoto(Image.new("RGBA", (100, 200), (255, 0, 0, 255)), cut_out=True)
    planned = plan_images(["a beach", "a cafe"], targets, [1, 2], [product])
    scenes = [p.scene for p in planned]
    assert all(scene is not None for scene in scenes)
    assert scenes[0] is scenes[2] and scenes[1] is scenes[3]  # The same layout for every variant.
    assert [scene.size for scene in scenes[:2] if scene] == [Size(1080, 1080), Size(1080, 1920)]


def _job(planned: PlannedImage) -> df_pb.GenerateRequest | df_pb.EditRequest:
    return diffusion_request(
        planned,
        model_id="flux2-klein-4b",
        render_size=Size(1088, 1920),
        num_inference_steps=2,
        request_id="r",
        output_format=RAW,
    )


def test_a_plain_image_is_a_generate_job_and_a_product_scene_an_edit_of_its_canvas() -> None:
    targets = [PlacementTarget(STORY, Size(1080, 1920))]
    product = ProductPhoto(Image.new("RGBA", (100, 200), (255, 0, 0, 255)), cut_out=True)
    plain = _job(plan_images(["a beach"], targets, [7])[0])
    assert isinstance(plain, df_pb.GenerateRequest)
    assert (plain.prompt, plain.seed, plain.width, plain.height) == ("a beach", 7, 1088, 1920)
    (planned,) = plan_images(["a beach"], targets, [7], [product])
    edit = _job(planned)
    assert isinstance(edit, df_pb.EditRequest)
    assert planned.scene is not None and edit.image.data == planned.scene.reference_png
    assert (edit.seed, edit.width, edit.height, edit.output_format) == (7, 1088, 1920, RAW)
    assert edit.instruction.endswith("background with this scene: a beach")
