"""Meta-device sizes of the real models against their published sizes, ties, FP8 and quantized estimates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adgen_diffusion.kept_configs import kept_repo, local_repo
from adgen_diffusion.sizes import SCALE_BYTES, ComponentSize, ModelSizer

GB = 1e9
KLEIN_4B = "black-forest-labs/FLUX.2-klein-4B"
KLEIN_9B = "black-forest-labs/FLUX.2-klein-9B"
QWEN_EDIT = "Qwen/Qwen-Image-Edit-2511"
Z_IMAGE = "Tongyi-MAI/Z-Image-Turbo"
# Published bf16 sizes in decimal GB (real-models.md): total, transformer, text encoder.
PUBLISHED = {
    KLEIN_4B: (16.0, 7.75, 8.05),
    KLEIN_9B: (34.8, 18.2, 16.4),
    QWEN_EDIT: (57.7, 40.9, 16.6),
    Z_IMAGE: (20.5, 12.3, 8.05),
}
# BFL FP8 single files: flux-2-klein-9b-fp8 (real-models.md) and flux-2-klein-4b-fp8 (klein-4B SOURCES.md).
FP8_FILE_GB = {KLEIN_9B: 9.43, KLEIN_4B: 4.07}
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def sizer() -> ModelSizer:
    return ModelSizer()


def _total(sizes: dict[str, ComponentSize]) -> float:
    return sum(size.total_bytes for size in sizes.values()) / GB


@pytest.mark.parametrize("repo", list(PUBLISHED))
def test_bf16_sizes_match_the_published_figures(sizer: ModelSizer, repo: str) -> None:
    total, transformer, text_encoder = PUBLISHED[repo]
    sizes = sizer.component_sizes(repo)
    assert set(sizes) == {"transformer", "text_encoder", "vae"}
    assert _total(sizes) == pytest.approx(total, rel=TOLERANCE)
    assert sizes["transformer"].total_bytes / GB == pytest.approx(transformer, rel=TOLERANCE)
    assert sizes["text_encoder"].total_bytes / GB == pytest.approx(text_encoder, rel=TOLERANCE)
    assert all(size.total_bytes == sum(size.bytes_by_dtype.values()) > 0 for size in sizes.values())


def test_tied_embeddings_are_counted_once(sizer: ModelSizer) -> None:
    # klein's Qwen3ForCausalLM ties lm_head to the embedding, so it holds what Z-Image's bare Qwen3Model holds.
    tied = sizer.component_sizes(KLEIN_4B)["text_encoder"]
    bare = sizer.component_sizes(Z_IMAGE)["text_encoder"]
    assert (tied.class_name, bare.class_name) == ("Qwen3ForCausalLM", "Qwen3Model")
    assert tied.parameters == bare.parameters
    assert tied.linear_weight_parameters == bare.linear_weight_parameters


def test_untied_lm_head_is_counted_but_not_quantized(sizer: ModelSizer) -> None:
    config = kept_repo(KLEIN_9B).component_config("text_encoder")
    assert config["tie_word_embeddings"] is False
    table = config["vocab_size"] * config["hidden_size"]
    size = sizer.component_sizes(KLEIN_9B)["text_encoder"]
    # The embedding and lm_head both stay wide: neither is a weight an NF4 / int8 quantizer converts.
    assert size.parameters - size.linear_weight_parameters >= 2 * table
    assert size.largest_tensor_bytes == table * 2


@pytest.mark.parametrize("repo", list(FP8_FILE_GB))
def test_fp8_file_matches_its_published_size_and_loads_with_per_row_scales(sizer: ModelSizer, repo: str) -> None:
    file = sizer.component_sizes(repo, fp8_transformer=True)["transformer"]
    wide = sizer.component_sizes(repo)["transformer"]
    assert file.total_bytes / GB == pytest.approx(FP8_FILE_GB[repo], rel=TOLERANCE)
    fp8, bf16, fp32 = (file.bytes_by_dtype[name] for name in ("float8_e4m3fn", "bfloat16", "float32"))
    # Every weight is in the file once, either as float8 (block linears) or bf16 (embedders, modulation, norms).
    assert fp8 + bf16 // 2 == wide.parameters
    assert 0.9 * wide.linear_weight_parameters < fp8 < wide.linear_weight_parameters
    # Stored: a 0-d fp32 weight_scale and input_scale per fused weight; loaded: one fp32 scale per row instead.
    assert fp32 % (2 * SCALE_BYTES) == 0 and fp32 < 2**12
    assert file.loaded is not None and file.loaded_bytes == file.loaded.total_bytes
    loaded = file.loaded.bytes_by_dtype
    assert (loaded["float8_e4m3fn"], loaded["bfloat16"]) == (fp8, bf16)
    assert loaded["float32"] % SCALE_BYTES == 0 and loaded["float32"] > 1000 * fp32
    # Already quantized: no weight-only quantizer applies on top.
    assert file.linear_weight_parameters == 0 and file.quantized_bytes(4, block_size=64) == file.total_bytes


def test_fp8_needs_a_flux2_transformer(sizer: ModelSizer) -> None:
    with pytest.raises(ValueError, match="Flux2Transformer2DModel"):
        sizer.component_sizes(Z_IMAGE, fp8_transformer=True)


@pytest.mark.parametrize("repo", [KLEIN_4B, QWEN_EDIT, Z_IMAGE])
def test_nf4_is_a_bit_over_a_quarter_of_bf16_for_transformers(sizer: ModelSizer, repo: str) -> None:
    size = sizer.component_sizes(repo)["transformer"]
    nf4 = size.quantized_bytes(4, block_size=64)
    assert 0.25 < nf4 / size.total_bytes < 0.30
    # NF4 packs two weights a byte and keeps one fp32 absmax per 64; the rest stays as stored.
    rest = size.total_bytes - size.linear_weight_bytes
    assert nf4 == rest + size.linear_weight_parameters // 2 + size.linear_weight_parameters // 64 * SCALE_BYTES
    rows = sum(rows for rows, _ in size.linear_weight_shapes)
    assert size.quantized_bytes(8, block_size=None) == rest + size.linear_weight_parameters + rows * SCALE_BYTES


def test_components_without_linears_quantize_to_their_stored_size(sizer: ModelSizer) -> None:
    vae = sizer.component_sizes(QWEN_EDIT)["vae"]
    assert vae.linear_weight_parameters == 0
    assert vae.quantized_bytes(4, block_size=64) == vae.total_bytes


def test_stored_dtype_scales_floating_tensors_and_sizes_are_cached(sizer: ModelSizer) -> None:
    wide = sizer.component_sizes(KLEIN_4B, stored_dtype="float32")["transformer"]
    narrow = sizer.component_sizes(KLEIN_4B)["transformer"]
    assert dict(wide.bytes_by_dtype) == {"float32": 2 * narrow.total_bytes}
    assert sizer.component_sizes(KLEIN_4B)["transformer"] is narrow
    with pytest.raises(ValueError, match="floating"):
        sizer.component_sizes(KLEIN_4B, stored_dtype="int8")


def test_local_folders_are_sized_apart_from_the_kept_repo_of_the_same_name(sizer: ModelSizer, tmp_path: Path) -> None:
    # A twin-like folder: klein-4B's transformer config shrunk, under the real repo's name.
    shrunk = {"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2, "attention_head_dim": 32}
    config = {**kept_repo(KLEIN_4B).component_config("transformer"), **shrunk, "axes_dims_rope": [8, 8, 8, 8]}
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(config))
    index = {"_class_name": "Flux2KleinPipeline", "transformer": ["diffusers", "Flux2Transformer2DModel"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    local = sizer.sizes_of(local_repo(tmp_path, KLEIN_4B), fp8_transformer=True)["transformer"]
    real = sizer.component_sizes(KLEIN_4B, fp8_transformer=True)["transformer"]
    assert local.loaded is not None and 0 < local.total_bytes < real.total_bytes / 100
    assert sizer.sizes_of(kept_repo(KLEIN_4B), fp8_transformer=True)["transformer"] is real
