"""Qwen-Image-Edit Lightning: a tiny random LoRA through the real load_lora_weights → fuse → unload path."""

from __future__ import annotations

import gc
import json
import math
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image
from safetensors.torch import load_file, save_file

from adgen_diffusion import weights
from adgen_diffusion.engine import DiffusionEngine, ImageJob
from adgen_diffusion.errors import ModelLoadError, ModelNotCachedError
from adgen_diffusion.registry import ModelRegistry, Task
from adgen_diffusion.tiny import MARKER_NAME, TINY_VERSION, tiny_dir

BASE = "qwen-image-edit-2511"
FOUR_STEP = "qwen-image-edit-2511-lightning-4step"
EIGHT_STEP = "qwen-image-edit-2511-lightning-8step"
TO_Q = "transformer_blocks.0.attn.to_q"


def _edit(engine: DiffusionEngine, model_id: str, steps: int = 4) -> np.ndarray:
    job = ImageJob(model_id, Task.IMAGE_EDIT, "make it summer", 64, 64, steps, 1.0, 42, 1, Image.new("RGB", (96, 64)))
    return np.asarray(engine.run(job, lambda _: None, threading.Event()).images[0], dtype=np.float64)


def _resident_transformer(engine: DiffusionEngine) -> torch.nn.Module:
    resident = engine._resident
    assert resident is not None
    transformer: torch.nn.Module = resident.pipeline.transformer
    return transformer


def _to_q_weight(engine: DiffusionEngine) -> torch.Tensor:
    layer = _resident_transformer(engine).get_submodule(TO_Q)
    assert isinstance(layer, torch.nn.Linear)
    return layer.weight.detach().clone()


def test_lightning_entries_name_the_lora_file_and_its_distillation_schedule() -> None:
    registry = ModelRegistry.load()
    for model_id, steps in ((FOUR_STEP, 4), (EIGHT_STEP, 8)):
        entry = registry.get(model_id)
        assert entry.lora is not None and entry.lora.fuse
        assert entry.lora.repo == "lightx2v/Qwen-Image-Edit-2511-Lightning"
        assert entry.lora.weight_name == f"Qwen-Image-Edit-2511-Lightning-{steps}steps-V1.0-bf16.safetensors"
        assert (entry.repo, entry.default_steps, entry.default_guidance) == ("Qwen/Qwen-Image-Edit-2511", steps, 1.0)
        assert (entry.license, entry.commercial_use, entry.tasks) == ("Apache-2.0", True, frozenset({Task.IMAGE_EDIT}))
        schedule = dict(entry.lora.scheduler)
        assert schedule["base_shift"] == schedule["max_shift"] == pytest.approx(math.log(3))
    assert registry.get(BASE).lora is None


def test_lightning_load_fuses_the_lora_into_the_transformer_weights(
    engine: DiffusionEngine, tiny_models_dir: Path
) -> None:
    engine.load(BASE)
    base_weight = _to_q_weight(engine)
    engine.load(FOUR_STEP)
    lora_file = tiny_dir(tiny_models_dir, "qwen-image-edit-2511-lightning") / (
        "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors"
    )
    # The real files' kohya layout: unprefixed lora_down / lora_up / alpha, scaled by alpha / rank as diffusers does.
    lora = load_file(str(lora_file))
    up, down = lora[f"{TO_Q}.lora_up.weight"].float(), lora[f"{TO_Q}.lora_down.weight"].float()
    scale = float(lora[f"{TO_Q}.alpha"]) / down.shape[0]
    assert scale != 1.0
    fused = _to_q_weight(engine)
    assert not torch.allclose(fused, base_weight)
    torch.testing.assert_close(fused, base_weight + scale * up @ down, rtol=1e-4, atol=1e-5)


def test_no_peft_adapter_modules_remain_after_fusing(engine: DiffusionEngine) -> None:
    engine.load(EIGHT_STEP)
    transformer = _resident_transformer(engine)
    assert not any(isinstance(module, BaseTunerLayer) for module in transformer.modules())
    assert not hasattr(transformer, "peft_config")
    del transformer
    gc.collect()
    assert not [obj for obj in gc.get_objects() if issubclass(type(obj), BaseTunerLayer)]


def test_lightning_runs_the_distilled_scheduler_config(engine: DiffusionEngine) -> None:
    engine.load(FOUR_STEP)
    resident = engine._resident
    assert resident is not None
    config = resident.pipeline.scheduler.config
    assert config.base_shift == config.max_shift == pytest.approx(math.log(3))
    assert (config.time_shift_type, config.use_dynamic_shifting, bool(config.shift_terminal)) == (
        "exponential",
        True,
        False,
    )


def test_lightning_edit_differs_from_the_base_model_and_between_variants_with_the_same_seed(
    engine: DiffusionEngine,
) -> None:
    base, four, eight = (_edit(engine, model_id) for model_id in (BASE, FOUR_STEP, EIGHT_STEP))
    assert np.isfinite(four).all() and four.shape == (64, 64, 3)
    assert np.abs(four - base).mean() > 0.5
    # Same scheduler, different LoRA file: the difference can only come from the fused weights.
    assert np.abs(four - eight).mean() > 0.5
    assert np.array_equal(_edit(engine, FOUR_STEP), four)


def test_unloading_a_lightning_model_verifies_every_module_is_gone(engine: DiffusionEngine) -> None:
    engine.load(FOUR_STEP)
    transformer_ref = weakref.ref(_resident_transformer(engine))
    report = engine.unload()
    assert report.model_id == FOUR_STEP and report.memory.verified and report.memory.leaked_modules == 0
    assert transformer_ref() is None and engine.clean


def test_lightning_with_its_lora_twin_missing_fails_fast_as_not_cached(
    tiny_registry: ModelRegistry, tiny_models_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "tiny").mkdir()
    base_twin = tiny_registry.get(BASE).tiny
    (tmp_path / "tiny" / base_twin).symlink_to(tiny_dir(tiny_models_dir, base_twin))
    engine = DiffusionEngine(tiny_registry, tmp_path, device="cpu")
    assert engine.is_available(tiny_registry.get(BASE))
    assert not engine.is_available(tiny_registry.get(FOUR_STEP))
    with pytest.raises(ModelNotCachedError, match="build-tiny"):
        engine.load(FOUR_STEP)


def test_a_lora_that_matches_no_transformer_layer_is_refused_not_served_as_the_base(
    tiny_registry: ModelRegistry, tiny_models_dir: Path, tmp_path: Path
) -> None:
    entry = tiny_registry.get(FOUR_STEP)
    assert entry.lora is not None
    (tmp_path / "tiny").mkdir()
    base_twin = tiny_registry.get(BASE).tiny
    (tmp_path / "tiny" / base_twin).symlink_to(tiny_dir(tiny_models_dir, base_twin))
    lora_dir = tmp_path / "tiny" / entry.lora.tiny
    lora_dir.mkdir()
    (lora_dir / MARKER_NAME).write_text(json.dumps({"version": TINY_VERSION}))
    # Keys of some other model: diffusers only logs a warning and loads nothing.
    bogus = {
        "unet.down_blocks.0.proj.lora_A.weight": torch.zeros(4, 8),
        "unet.down_blocks.0.proj.lora_B.weight": torch.zeros(8, 4),
    }
    save_file(bogus, str(lora_dir / entry.lora.weight_name))
    engine = DiffusionEngine(tiny_registry, tmp_path, device="cpu")
    with pytest.raises(ModelLoadError, match="matched no layer"):
        engine.load(FOUR_STEP)
    assert engine.loaded_model_id is None


def _fake_cached_file(hub: Path, repo: str, file_name: str) -> Path:
    """A Hugging Face cache entry as huggingface_hub lays it out: refs/main → snapshots/<commit>/<file>."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    path = repo_dir / "snapshots" / commit / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_offline_lightning_needs_its_lora_in_the_cache_as_well(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub_constants

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    entry = ModelRegistry.load().get(FOUR_STEP)
    assert entry.lora is not None
    _fake_cached_file(hub, entry.repo, "model_index.json")
    assert not weights.is_available(entry, tmp_path, tiny=False)
    with pytest.raises(ModelNotCachedError, match=f"adgen-diffusion fetch {FOUR_STEP}"):
        weights.locate(entry, tmp_path, tiny=False)
    lora_path = _fake_cached_file(hub, entry.lora.repo, entry.lora.weight_name)
    location = weights.locate(entry, tmp_path, tiny=False)
    assert location.lora_file == lora_path and (location.pipeline_dir / "model_index.json").is_file()


def test_fetch_downloads_the_lora_file_with_the_base_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    requested: list[tuple[str, str | None]] = []

    def snapshot(repo: str, **_: object) -> str:
        requested.append((repo, None))
        return str(tmp_path / repo)

    def one_file(repo: str, file_name: str, **_: object) -> str:
        requested.append((repo, file_name))
        return str(tmp_path / repo / file_name)

    monkeypatch.setattr(weights, "snapshot_download", snapshot)
    monkeypatch.setattr(weights, "hf_hub_download", one_file)
    entry = ModelRegistry.load().get(EIGHT_STEP)
    assert entry.lora is not None
    location = weights.download(entry)
    assert requested == [(entry.repo, None), (entry.lora.repo, entry.lora.weight_name)]
    assert location.lora_file == tmp_path / entry.lora.repo / entry.lora.weight_name


def test_a_failed_download_while_online_is_model_not_cached_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(repo: str, **_: object) -> str:
        raise ConnectionError(f"cannot reach the Hub for {repo}")

    monkeypatch.setattr(weights, "download", lambda entry: unreachable(entry.repo))
    with pytest.raises(ModelNotCachedError, match="downloading it failed") as raised:
        weights.locate(ModelRegistry.load().get(EIGHT_STEP), tmp_path, tiny=False)
    assert "cannot reach" not in str(raised.value)
