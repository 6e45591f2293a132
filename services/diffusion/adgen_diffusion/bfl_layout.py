"""FLUX.2 transformer weights in BFL's original key layout, and their FP8 quantization (per row or per tensor).

Used to build the tiny FP8 single-file twin: the same keys, fused QKV and shift/scale order as the
official files, so `from_single_file` runs its real conversion path on it.
"""

from __future__ import annotations

import torch

# E4M3's largest finite value: a scale maps a row's (or the whole tensor's) absolute maximum onto it.
FP8_MAX = 448.0

_RENAMES = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
    "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
    "single_stream_modulation.linear": "single_stream_modulation.lin",
    "proj_out": "final_layer.linear",
}
_DOUBLE = {
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.to_out.0": "img_attn.proj",
    "ff.linear_in": "img_mlp.0",
    "ff.linear_out": "img_mlp.2",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
    "attn.to_add_out": "txt_attn.proj",
    "ff_context.linear_in": "txt_mlp.0",
    "ff_context.linear_out": "txt_mlp.2",
}
_SINGLE = {
    "attn.to_qkv_mlp_proj": "linear1",
    "attn.to_out": "linear2",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
}
_FUSED = {
    ("attn.to_q", "attn.to_k", "attn.to_v"): "img_attn.qkv",
    ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"): "txt_attn.qkv",
}


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _norm_param(name: str, param: str) -> str:
    # BFL stores RMSNorm weights as `.scale`.
    return "scale" if name.endswith(("query_norm", "key_norm")) and param == "weight" else param


def to_bfl_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers `Flux2Transformer2DModel` keys → the original BFL checkpoint keys."""
    out: dict[str, torch.Tensor] = {}
    pending = dict(state)
    for key in [k for k in pending if k.startswith("transformer_blocks.")]:
        if key not in pending:
            continue
        _, index, rest = key.split(".", 2)
        name, param = rest.rsplit(".", 1)
        fused = next((group for group in _FUSED if name in group), None)
        if fused is not None:
            parts = [pending.pop(f"transformer_blocks.{index}.{part}.{param}") for part in fused]
            out[f"double_blocks.{index}.{_FUSED[fused]}.{param}"] = torch.cat(parts, dim=0)
            continue
        target = _DOUBLE[name]
        out[f"double_blocks.{index}.{target}.{_norm_param(target, param)}"] = pending.pop(key)
    for key in [k for k in pending if k.startswith("single_transformer_blocks.")]:
        _, index, rest = key.split(".", 2)
        name, param = rest.rsplit(".", 1)
        target = _SINGLE[name]
        out[f"single_blocks.{index}.{target}.{_norm_param(target, param)}"] = pending.pop(key)
    for key, tensor in pending.items():
        name, param = key.rsplit(".", 1)
        if name == "norm_out.linear":
            # Diffusers keeps (scale, shift); the original keeps (shift, scale).
            out[f"final_layer.adaLN_modulation.1.{param}"] = _swap_halves(tensor)
            continue
        out[f"{_RENAMES[name]}.{param}"] = tensor
    return out


def _quantizable(key: str, tensor: torch.Tensor) -> bool:
    # Like the published FP8 files: block linears only; embedders, modulation and the final layer stay wide.
    return key.startswith(("double_blocks.", "single_blocks.")) and key.endswith(".weight") and tensor.ndim == 2


def quantize_fp8_per_row(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Block linear weights → float8_e4m3fn plus an fp32 per-row `weight_scale` (the BFL "fp8r" layout)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not _quantizable(key, tensor):
            out[key] = tensor
            continue
        row_max = tensor.float().abs().amax(dim=1).clamp(min=1e-12)
        scale = row_max / FP8_MAX
        out[key] = (tensor.float() / scale[:, None]).to(torch.float8_e4m3fn)
        out[key.removesuffix("weight") + "weight_scale"] = scale.float()
    return out


def quantize_fp8_per_tensor(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Block linear weights → float8_e4m3fn plus a 0-d fp32 `weight_scale` and `input_scale` (BFL's real FP8 file)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if not _quantizable(key, tensor):
            out[key] = tensor
            continue
        scale = tensor.float().abs().amax().clamp(min=1e-12) / FP8_MAX
        out[key] = (tensor.float() / scale).to(torch.float8_e4m3fn)
        stem = key.removesuffix("weight")
        out[stem + "weight_scale"] = scale.float().reshape(())
        # Static activation scale as such files carry it; loaders that quantize activations on the fly ignore it.
        out[stem + "input_scale"] = torch.tensor(1.0, dtype=torch.float32)
    return out


def quantize_fp8_unscaled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Block linear weights cast to float8_e4m3fn with no scales (plain FP8 storage)."""
    return {
        key: tensor.to(torch.float8_e4m3fn) if _quantizable(key, tensor) else tensor for key, tensor in state.items()
    }
