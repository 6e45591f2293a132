"""The tiny twins against the real repositories' kept configs: the same classes and keys, only dimensions shrunk."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import importlib.util
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus
from PIL import Image
from safetensors.torch import load_file
from transformers import Qwen2VLProcessor

from adgen_diffusion import twins
from adgen_diffusion.bfl_layout import to_bfl_layout
from adgen_diffusion.kept_configs import KeptRepo, kept_repo, local_repo
from adgen_diffusion.qwen_processor import load_image_only_processor
from adgen_diffusion.tiny import is_built, tiny_dir

# Pipeline twins and the real repository each copies (the FP8 twin's folder is the 9B's, as its config repo).
PIPELINE_TWINS = {
    "flux2-klein-4b": twins.KLEIN_4B,
    "flux2-klein-9b": twins.KLEIN_9B,
    "flux2-klein-9b-fp8": twins.KLEIN_9B,
    "qwen-image-edit-2511": twins.QWEN_EDIT,
    "z-image-turbo": twins.Z_IMAGE,
}
LIGHTNING_FILES = (
    "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
    "Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors",
)
FP8_FILE = "flux-2-klein-9b-fp8.safetensors"
# The byte tokenizer's 256 byte tokens come first; the real added tokens follow in their real order.
BYTE_TOKENS = 256

# Keys that record who saved a file with what, not the model, compared on neither side (at any nesting level):
# the saver's path and library versions; the dtype (twins are saved in float32, the real weights are bfloat16);
# `architectures`, which transformers rewrites to the saving class (Z-Image's real file says Qwen3ForCausalLM
# while its model_index loads Qwen3Model).
BOOKKEEPING = frozenset(
    {"_name_or_path", "_diffusers_version", "transformers_version", "dtype", "torch_dtype", "architectures"}
)
# Keys transformers 5.24 writes that the real (transformers 4) files lack, each with the value it must have.
TRANSFORMERS_ADDED: dict[str, Callable[[Mapping[str, Any], str], bool]] = {
    # Every token-id key is written; the real files leave the pad id unset.
    "pad_token_id": lambda twin, key: twin[key] is None,
    # Per-layer attention kinds, derived from the layer count; all full since use_sliding_window is false.
    "layer_types": lambda twin, key: twin[key] == ["full_attention"] * twin[_sibling(key, "num_hidden_layers")],
    # The vision tower's own init scale and its 2-D ("axial") rope, spelt out since transformers 5.
    "vision_config.initializer_range": lambda twin, key: twin[key] == 0.02,
    "vision_config.rope_parameters.rope_type": lambda twin, key: twin[key] == "axial",
    "vision_config.rope_parameters.rope_theta": lambda twin, key: twin[key] == 10000.0,
}
# Values transformers 5.24 rewrites on load: the real value → the one it writes back.
TRANSFORMERS_CHANGED = {
    # Nulled when use_sliding_window is false (the real Qwen2.5-VL text config keeps 32768).
    "text_config.sliding_window": (32768, None),
    # The vision sub-config has its own model type since transformers 5.
    "vision_config.model_type": ("qwen2_5_vl", "qwen2_5_vl_vision"),
}
# __init__ parameters diffusers 0.42.1 has that the real files predate; saved at their defaults.
DIFFUSERS_ADDED = {
    "AutoencoderKLFlux2": {"decoder_block_out_channels"},
    "QwenImageTransformer2DModel": {"use_additional_t_cond", "use_layer3d_rope"},
    "ZImageTransformer2DModel": {"siglip_feat_dim"},
    # Z-Image's real scheduler file lists 3 keys; diffusers writes every __init__ argument.
    "FlowMatchEulerDiscreteScheduler": set(
        inspect.signature(diffusers.FlowMatchEulerDiscreteScheduler.__init__).parameters
    ),
}
# Tokenizer configs: transformers 5 writes its backend, class and (unset, so huge) model_max_length; it keeps
# added tokens in tokenizer.json (checked there) and bakes add_bos_token into tokenizer.json's post-processor.
TOKENIZER_ADDED = frozenset({"backend", "tokenizer_class", "model_max_length"})
TOKENIZER_MOVED = frozenset({"added_tokens_decoder", "add_bos_token"})


def _sibling(dotted: str, leaf: str) -> str:
    parent, _, _ = dotted.rpartition(".")
    return f"{parent}.{leaf}" if parent else leaf


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _as_transformers_5(key: str) -> str:
    """A transformers 4 key as transformers 5 writes it: rope settings folded into `rope_parameters`."""
    parts = key.split(".")
    if parts[-1] == "rope_theta":
        parts[-1:] = ["rope_parameters", "rope_theta"]
    return ".".join("rope_parameters" if part == "rope_scaling" else part for part in parts)


def _real_flat(config: Mapping[str, Any], library: str) -> dict[str, Any]:
    flat = _flat(config)
    if library != "transformers":
        return flat
    renamed = {_as_transformers_5(key): value for key, value in flat.items()}
    for key in [key for key, value in renamed.items() if key.endswith("rope_parameters") and value is None]:
        # No rope scaling in transformers 4 is the default rope type in transformers 5.
        del renamed[key]
        renamed[f"{key}.rope_type"] = "default"
    return renamed


def _config_path(component: str) -> str:
    return "scheduler/scheduler_config.json" if component == "scheduler" else f"{component}/config.json"


def _added_tokens_of_real(kept: KeptRepo) -> dict[int, dict[str, Any]]:
    decoder = kept.read("tokenizer/tokenizer_config.json")["added_tokens_decoder"]
    return {int(key): token for key, token in decoder.items()}


def _added_tokens_of_twin(directory: Path, folder: str = "tokenizer") -> dict[int, dict[str, Any]]:
    tokenizer = json.loads((directory / folder / "tokenizer.json").read_text())
    return {token["id"]: token for token in tokenizer["added_tokens"]}


def _no_larger(twin: Any, real: Any) -> bool:
    if isinstance(real, list):
        return 0 < len(twin) <= len(real) and max(twin) <= max(real)
    return bool(0 < twin <= real)


def _shrunk_ok(rule: Any, real: Any, twin: Any, directory: Path, kept: KeptRepo) -> bool:
    if rule is twins.same_token:
        # Ids move with the vocabulary; the token they name must not.
        twin_content = _added_tokens_of_twin(directory)[twin]["content"]
        return bool(twin_content == _added_tokens_of_real(kept)[real]["content"])
    if rule is twins.vocabulary:
        return bool(twin == BYTE_TOKENS + len(_added_tokens_of_real(kept)))
    return _no_larger(twin, real)


def _added_ok(library: str, class_name: str, key: str, twin: Mapping[str, Any]) -> bool:
    if library == "transformers":
        check = TRANSFORMERS_ADDED.get(key) or TRANSFORMERS_ADDED.get(key.rsplit(".", 1)[-1])
        return check is not None and check(twin, key)
    if key not in DIFFUSERS_ADDED.get(class_name, set()):
        return False
    default = inspect.signature(getattr(diffusers, class_name).__init__).parameters[key].default
    return bool(twin[key] == default)


def _config_drift(kept: KeptRepo, directory: Path, component: str) -> list[str]:
    """Every key that differs from the real config other than as the shrink rules and the lists above allow."""
    library, class_name = kept.components()[component]
    real = _real_flat(kept.read(_config_path(component)), library)
    twin = _flat(local_repo(directory).read(_config_path(component)))
    rename = _as_transformers_5 if library == "transformers" else str
    rules = {rename(key): rule for key, rule in twins.SHRINK_RULES.get(class_name, {}).items()}
    drift = []
    for key in sorted(real.keys() | twin.keys()):
        if key.rsplit(".", 1)[-1] in BOOKKEEPING:
            continue
        if key not in twin:
            drift.append(f"{key}: missing from the twin")
        elif key not in real:
            if not _added_ok(library, class_name, key, twin):
                drift.append(f"{key}={twin[key]!r}: not in the real config")
        elif key in rules:
            if not _shrunk_ok(rules[key], real[key], twin[key], directory, kept):
                drift.append(f"{key}: {real[key]!r} shrunk to {twin[key]!r}")
        elif (real[key], twin[key]) != TRANSFORMERS_CHANGED.get(key, (real[key], real[key])):
            drift.append(f"{key}: real {real[key]!r}, twin {twin[key]!r}")
    return drift


def _tokenizer_drift(kept: KeptRepo, directory: Path, folder: str, saved_only: frozenset[str]) -> list[str]:
    real = kept.read("tokenizer/tokenizer_config.json")
    twin = json.loads((directory / folder / "tokenizer_config.json").read_text())
    drift = [f"{key}: missing from the twin" for key in real.keys() - twin.keys() - TOKENIZER_MOVED]
    drift += [f"{key}: not in the real config" for key in twin.keys() - real.keys() - saved_only]
    drift += [
        f"{key}: real {real[key]!r}, twin {twin[key]!r}" for key in real.keys() & twin.keys() if real[key] != twin[key]
    ]
    real_added = [(token["content"], token["special"]) for _, token in sorted(_added_tokens_of_real(kept).items())]
    twin_added = _added_tokens_of_twin(directory, folder)
    if [(token["content"], token["special"]) for _, token in sorted(twin_added.items())] != real_added:
        drift.append("added tokens differ from the real added_tokens_decoder")
    if sorted(twin_added) != list(range(BYTE_TOKENS, BYTE_TOKENS + len(real_added))):
        drift.append("added tokens do not follow the byte vocabulary")
    return drift


WEIGHTED_AND_SCHEDULER = [
    (twin, component)
    for twin, repo in PIPELINE_TWINS.items()
    for component in kept_repo(repo).components()
    if component not in {"tokenizer", "processor"} and not (twin.endswith("-fp8") and component == "transformer")
]


@pytest.mark.parametrize("twin", PIPELINE_TWINS)
def test_model_index_names_the_real_classes_and_options(tiny_models_dir: Path, twin: str) -> None:
    real = kept_repo(PIPELINE_TWINS[twin]).model_index()
    saved = local_repo(tiny_dir(tiny_models_dir, twin)).model_index()
    real.pop("_diffusers_version", None)
    saved.pop("_diffusers_version", None)
    assert saved == real


@pytest.mark.parametrize(("twin", "component"), WEIGHTED_AND_SCHEDULER)
def test_each_component_config_differs_from_the_real_one_only_in_shrunk_dimensions(
    tiny_models_dir: Path, twin: str, component: str
) -> None:
    assert _config_drift(kept_repo(PIPELINE_TWINS[twin]), tiny_dir(tiny_models_dir, twin), component) == []


def test_the_fp8_twin_transformer_config_is_the_9b_twins(tiny_models_dir: Path) -> None:
    fp8 = local_repo(tiny_dir(tiny_models_dir, "flux2-klein-9b-fp8")).component_config("transformer")
    assert fp8 == local_repo(tiny_dir(tiny_models_dir, "flux2-klein-9b")).component_config("transformer")


@pytest.mark.parametrize("twin", PIPELINE_TWINS)
def test_tokenizers_are_the_real_class_over_bytes_with_the_real_added_tokens(tiny_models_dir: Path, twin: str) -> None:
    drift = _tokenizer_drift(
        kept_repo(PIPELINE_TWINS[twin]), tiny_dir(tiny_models_dir, twin), "tokenizer", TOKENIZER_ADDED
    )
    assert drift == []


def _config(tiny_models_dir: Path, twin: str, component: str) -> dict[str, Any]:
    return local_repo(tiny_dir(tiny_models_dir, twin)).component_config(component)


@pytest.mark.parametrize("twin", ["flux2-klein-4b", "flux2-klein-9b"])
def test_klein_twins_keep_the_couplings_its_pipeline_relies_on(tiny_models_dir: Path, twin: str) -> None:
    text, transformer, vae = (_config(tiny_models_dir, twin, c) for c in ("text_encoder", "transformer", "vae"))
    # The pipeline stacks the hidden states of layers 9, 18 and 27.
    assert text["num_hidden_layers"] >= 28
    assert transformer["joint_attention_dim"] == 3 * text["hidden_size"]
    assert sum(transformer["axes_dims_rope"]) == transformer["attention_head_dim"]
    assert transformer["in_channels"] == vae["latent_channels"] * vae["patch_size"][0] * vae["patch_size"][1]


def test_the_qwen_edit_twin_keeps_the_couplings_its_pipeline_relies_on(tiny_models_dir: Path) -> None:
    text, transformer = (_config(tiny_models_dir, "qwen-image-edit-2511", c) for c in ("text_encoder", "transformer"))
    width = text["text_config"]["hidden_size"]
    assert transformer["joint_attention_dim"] == width == text["vision_config"]["out_hidden_size"]
    assert sum(transformer["axes_dims_rope"]) == transformer["attention_head_dim"]
    head_dim = width // text["text_config"]["num_attention_heads"]
    assert 2 * sum(text["text_config"]["rope_parameters"]["mrope_section"]) == head_dim


def test_the_z_image_twin_keeps_the_couplings_its_pipeline_relies_on(tiny_models_dir: Path) -> None:
    text, transformer = (_config(tiny_models_dir, "z-image-turbo", c) for c in ("text_encoder", "transformer"))
    assert transformer["cap_feat_dim"] == text["hidden_size"]
    assert sum(transformer["axes_dims"]) * transformer["n_heads"] == transformer["dim"]


def test_the_fp8_twin_is_one_file_in_bfl_layout_with_per_tensor_weight_and_input_scales(tiny_models_dir: Path) -> None:
    directory = tiny_dir(tiny_models_dir, "flux2-klein-9b-fp8")
    assert (directory / "transformer" / "config.json").is_file()
    assert not list((directory / "transformer").glob("*.safetensors*"))
    state = load_file(str(directory / FP8_FILE))
    # The same random weights as the 9B twin, in the original BFL keys.
    nine_b = tiny_dir(tiny_models_dir, "flux2-klein-9b") / "transformer" / "diffusion_pytorch_model.safetensors"
    reference = to_bfl_layout(load_file(str(nine_b)))
    assert {key for key in state if not key.endswith(("weight_scale", "input_scale"))} == set(reference)
    assert {"img_in.weight", "double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"} <= set(state)
    quantized = {key for key, tensor in state.items() if tensor.dtype == torch.float8_e4m3fn}
    block_linears = {
        key
        for key, tensor in reference.items()
        if key.startswith(("double_blocks.", "single_blocks.")) and tensor.ndim == 2
    }
    assert quantized == block_linears
    for key in quantized:
        stem = key.removesuffix("weight")
        scale, input_scale = state[stem + "weight_scale"], state[stem + "input_scale"]
        assert scale.shape == () and input_scale.shape == ()
        # E4M3: 3 mantissa bits (relative step 2^-3), subnormal step 2^-9 of the scale.
        torch.testing.assert_close(state[key].float() * scale, reference[key], rtol=2**-4, atol=float(scale) * 2**-9)
    for key in set(reference) - quantized:
        assert torch.equal(state[key], reference[key])


def test_the_lightning_twin_is_unprefixed_kohya_keys_on_every_block_linear(tiny_models_dir: Path) -> None:
    transformer = diffusers.QwenImageTransformer2DModel.from_pretrained(
        str(tiny_dir(tiny_models_dir, "qwen-image-edit-2511") / "transformer")
    )
    linears = {
        name: module
        for name, module in transformer.named_modules()
        if name.startswith("transformer_blocks.") and isinstance(module, torch.nn.Linear)
    }
    files = [load_file(str(tiny_dir(tiny_models_dir, "qwen-image-edit-2511-lightning") / f)) for f in LIGHTNING_FILES]
    for state in files:
        suffixes = (".lora_down.weight", ".lora_up.weight", ".alpha")
        assert set(state) == {name + suffix for name in linears for suffix in suffixes}
        for name, linear in linears.items():
            down, up, alpha = (state[name + suffix] for suffix in suffixes)
            assert down.shape == (twins.LORA_RANK, linear.in_features)
            assert up.shape == (linear.out_features, twins.LORA_RANK)
            assert alpha.shape == () and float(alpha) == twins.LORA_ALPHA
            assert {down.dtype, up.dtype, alpha.dtype} == {torch.bfloat16}
    four, eight = files
    assert not torch.equal(
        four[f"{next(iter(linears))}.lora_up.weight"], eight[f"{next(iter(linears))}.lora_up.weight"]
    )


def test_diffusers_converts_the_kohya_keys_folding_alpha_over_rank_into_the_weights(tiny_models_dir: Path) -> None:
    directory = tiny_dir(tiny_models_dir, "qwen-image-edit-2511-lightning")
    raw = load_file(str(directory / LIGHTNING_FILES[0]))
    converted = diffusers.QwenImageEditPlusPipeline.lora_state_dict(str(directory), weight_name=LIGHTNING_FILES[0])
    modules = {key.removesuffix(".alpha") for key in raw if key.endswith(".alpha")}
    assert set(converted) == {f"transformer.{name}.lora_{half}.weight" for name in modules for half in "AB"}
    for name in modules:
        expected = (
            twins.LORA_ALPHA
            / twins.LORA_RANK
            * raw[f"{name}.lora_up.weight"].float()
            @ raw[f"{name}.lora_down.weight"].float()
        )
        delta = (
            converted[f"transformer.{name}.lora_B.weight"].float()
            @ converted[f"transformer.{name}.lora_A.weight"].float()
        )
        torch.testing.assert_close(delta, expected)


def test_the_qwen_twin_has_the_real_processor_folder(tiny_models_dir: Path) -> None:
    directory = tiny_dir(tiny_models_dir, "qwen-image-edit-2511")
    kept = kept_repo(twins.QWEN_EDIT)
    assert local_repo(directory).components()["processor"] == ("transformers", "Qwen2VLProcessor")
    folder = directory / "processor"
    assert {path.name for path in folder.iterdir()} >= {
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        assert json.loads((folder / name).read_text()) == kept.read(f"processor/{name}")
    assert json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"] == (
        "Qwen2VLImageProcessorFast"
    )
    # ProcessorMixin.save_pretrained records the processor class in its tokenizer config.
    assert _tokenizer_drift(kept, directory, "processor", TOKENIZER_ADDED | {"processor_class"}) == []
    assert (folder / "tokenizer.json").read_bytes() == (directory / "tokenizer" / "tokenizer.json").read_bytes()


def test_the_image_only_processor_loads_from_the_real_layout_and_matches_the_text_encoder(
    tiny_models_dir: Path,
) -> None:
    directory = tiny_dir(tiny_models_dir, "qwen-image-edit-2511")
    processor = load_image_only_processor(directory / "processor")
    vision = _config(tiny_models_dir, "qwen-image-edit-2511", "text_encoder")
    assert isinstance(processor, Qwen2VLProcessor)
    assert processor.image_token_id == vision["image_token_id"]
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size) == (
        vision["vision_config"]["patch_size"],
        vision["vision_config"]["spatial_merge_size"],
        vision["vision_config"]["temporal_patch_size"],
    )
    inputs = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>make it blue"],
        images=[Image.new("RGB", (56, 56))],
        return_tensors="pt",
    )
    grid = inputs["image_grid_thw"][0]
    image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert image_tokens == int(grid.prod()) // image_processor.merge_size**2


def test_without_torchvision_the_real_processor_class_cannot_load_so_the_loader_passes_the_image_only_one(
    tiny_models_dir: Path,
) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: Qwen2VLProcessor can build its video processor here")
    directory = tiny_dir(tiny_models_dir, "qwen-image-edit-2511")
    with pytest.raises(ImportError, match="Qwen2VLVideoProcessor requires the Torchvision library"):
        Qwen2VLProcessor.from_pretrained(directory / "processor")
    with pytest.raises(ImportError, match="Torchvision"):
        diffusers.QwenImageEditPlusPipeline.from_pretrained(str(directory))


def _generate(directory: Path, pipeline_class: str, **call: Any) -> np.ndarray:
    extra = {"processor": load_image_only_processor(directory / "processor")} if "Qwen" in pipeline_class else {}
    pipeline = getattr(diffusers, pipeline_class).from_pretrained(str(directory), **extra)
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    image = pipeline(height=64, width=64, num_inference_steps=2, generator=generator, **call).images[0]
    return np.asarray(image, dtype=np.float64)


@pytest.mark.parametrize(
    ("twin", "pipeline_class", "call"),
    [
        ("flux2-klein-4b", "Flux2KleinPipeline", {"prompt": "an iced latte"}),
        ("flux2-klein-9b", "Flux2KleinPipeline", {"prompt": "an iced latte"}),
        ("z-image-turbo", "ZImagePipeline", {"prompt": "an iced latte", "guidance_scale": 0.0}),
        (
            "qwen-image-edit-2511",
            "QwenImageEditPlusPipeline",
            {"prompt": "make it summer", "image": [Image.new("RGB", (96, 64), "white")], "true_cfg_scale": 1.0},
        ),
    ],
)
def test_each_pipeline_twin_generates_through_its_real_pipeline_class(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch, twin: str, pipeline_class: str, call: dict[str, Any]
) -> None:
    # The real 1024² / 384² reference sizes would make a 2 MB model take seconds.
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "VAE_IMAGE_SIZE", 128 * 128)
    monkeypatch.setattr(pipeline_qwenimage_edit_plus, "CONDITION_IMAGE_SIZE", 56 * 56)
    image = _generate(tiny_dir(tiny_models_dir, twin), pipeline_class, **call)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 1.0


def test_twins_are_deterministic_and_built_only_when_missing_or_stale(tiny_models_dir: Path, tmp_path: Path) -> None:
    rebuilt = twins.build_tiny_model(tmp_path, "z-image-turbo")
    assert is_built(rebuilt)
    for weights in sorted(rebuilt.glob("*/*.safetensors")):
        shared = tiny_dir(tiny_models_dir, "z-image-turbo") / weights.relative_to(rebuilt)
        assert weights.read_bytes() == shared.read_bytes(), weights
    marker_time = (rebuilt / ".adgen-tiny.json").stat().st_mtime_ns
    assert twins.build_tiny_model(tmp_path, "z-image-turbo") == rebuilt
    assert (rebuilt / ".adgen-tiny.json").stat().st_mtime_ns == marker_time
    assert not rebuilt.with_name("z-image-turbo.partial").exists()


def test_a_shrink_rule_for_a_key_the_real_config_lacks_is_refused() -> None:
    sizes = twins.Sizes(vocab_size=10, token_ids={}, real_text_width=8)
    with pytest.raises(KeyError, match="num_layers"):
        twins.shrink({"num_single_layers": 20}, {"num_layers": 1}, sizes)
    assert twins.shrink({"axes": [16, 56, 56], "theta": 10}, {"axes": twins.scaled_to(32)}, sizes) == {
        "axes": [4, 14, 14],
        "theta": 10,
    }
