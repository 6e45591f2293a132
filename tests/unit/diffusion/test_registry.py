"""The model registry: the shipped allowlist, tiny limits, and refusal of bad entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from adgen_diffusion.errors import ModelNotFoundError
from adgen_diffusion.registry import ModelRegistry, Task

REAL_IDS = {
    "flux2-klein-4b",
    "flux2-klein-9b",
    "flux2-klein-9b-fp8",
    "qwen-image-edit-2511",
    "qwen-image-edit-2511-lightning-4step",
    "qwen-image-edit-2511-lightning-8step",
    "z-image-turbo",
}


def test_shipped_registry_names_every_seed_model() -> None:
    assert {entry.id for entry in ModelRegistry.load()} == REAL_IDS


def test_licences_mark_klein_9b_non_commercial_and_the_rest_commercial() -> None:
    registry = ModelRegistry.load()
    commercial = {entry.id: entry.commercial_use for entry in registry}
    assert commercial == {
        "flux2-klein-4b": True,
        "flux2-klein-9b": False,
        "flux2-klein-9b-fp8": False,
        "qwen-image-edit-2511": True,
        "qwen-image-edit-2511-lightning-4step": True,
        "qwen-image-edit-2511-lightning-8step": True,
        "z-image-turbo": True,
    }


def test_entries_declare_tasks_steps_and_weights_source() -> None:
    registry = ModelRegistry.load()
    z_image = registry.get("z-image-turbo")
    assert (z_image.default_steps, z_image.default_guidance, z_image.tasks) == (8, 0.0, frozenset({Task.TEXT_TO_IMAGE}))
    qwen = registry.get("qwen-image-edit-2511")
    assert qwen.tasks == {Task.IMAGE_EDIT} and qwen.repo == "Qwen/Qwen-Image-Edit-2511"
    fp8 = registry.get("flux2-klein-9b-fp8")
    assert fp8.single_file == "flux-2-klein-9b-fp8.safetensors"
    assert fp8.config_repo == "black-forest-labs/FLUX.2-klein-9B"
    assert registry.get("flux2-klein-4b").supports(Task.IMAGE_EDIT)


def test_unknown_id_raises_model_not_found() -> None:
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        ModelRegistry.load().get("stable-diffusion-1.5")


def test_tiny_mode_keeps_public_ids_and_relaxes_size_limits() -> None:
    real, tiny = ModelRegistry.load(), ModelRegistry.load(tiny=True)
    assert [entry.id for entry in real] == [entry.id for entry in tiny]
    assert real.get("flux2-klein-4b").min_side == 256
    assert tiny.get("flux2-klein-4b").min_side == tiny.tiny_limits.min_side < 256


def test_z_image_turbo_runs_the_eight_forwards_it_was_distilled_for() -> None:
    # diffusers 0.42.1: N steps are N transformer forwards (sigmas linspace(1, 1/N, N)).
    assert ModelRegistry.load().get("z-image-turbo").default_steps == 8


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ('family = "z-image"', 'family = "teleport"', "family"),
        ('quantize = ["int8", "nf4"]', 'quantize = ["int3"]', "int3"),
        ("[component_defaults.vae]", "[component_defaults.unet]", "unknown components"),
        # A misspelt key is refused, not silently ignored.
        ('tiny = "z-image-turbo"', 'tiny = "z-image-turbo"\nvae_tilling = true', "vae_tilling"),
        ("size_multiple = 16", 'size_multiple = "sixteen"', "size_multiple"),
    ],
)
def test_entry_with_an_unknown_family_or_option_is_refused(
    tmp_path: Path, original: str, broken: str, complaint: str
) -> None:
    path = tmp_path / "models.toml"
    text = (Path(__file__).parents[3] / "services/diffusion/adgen_diffusion/models.toml").read_text()
    assert original in text
    path.write_text(text.replace(original, broken, 1))
    with pytest.raises(ValueError, match=complaint):
        ModelRegistry.load(path)


def test_every_family_adapter_names_a_diffusers_pipeline() -> None:
    import diffusers

    from adgen_diffusion.families import family_of

    for entry in ModelRegistry.load():
        assert hasattr(diffusers, family_of(entry.family).pipeline_class)


@pytest.mark.parametrize(
    ("original", "broken", "complaint"),
    [
        ("default_steps = 8", "default_steps = 0", "default_steps"),
        ("native_side = 1024", "native_side = 1000", "native_side"),
    ],
)
def test_entry_whose_defaults_would_fail_its_own_checks_is_refused(
    tmp_path: Path, original: str, broken: str, complaint: str
) -> None:
    path = tmp_path / "models.toml"
    text = (Path(__file__).parents[3] / "services/diffusion/adgen_diffusion/models.toml").read_text()
    assert original in text
    path.write_text(text.replace(original, broken, 1))
    with pytest.raises(ValueError, match=complaint):
        ModelRegistry.load(path)
