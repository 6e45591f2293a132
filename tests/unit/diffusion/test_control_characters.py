"""Generate and Edit refuse control characters in their prompt and instruction; line breaks may stay."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.type.v1 import image_pb2
from adgen_diffusion.job_requests import prepare_edit, prepare_generate
from adgen_diffusion.registry import ModelRegistry
from adgen_runtime.errors import InvalidArgument

HOSTILE = ["\x00", "\x08", "\x1b", "\x7f", "\x85", "\u2066"]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("control", HOSTILE, ids=[f"U+{ord(c):04X}" for c in HOSTILE])
def test_a_prompt_with_a_control_character_is_refused_naming_it(tiny_registry: ModelRegistry, control: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        prepare_generate(
            pb.GenerateRequest(prompt=f"a cup{control} of juice"), tiny_registry.get("z-image-turbo"), prefix="request."
        )
    (violation,) = raised.value.field_violations
    assert violation.field == "request.prompt" and f"U+{ord(control):04X}" in violation.description


@pytest.mark.parametrize("control", HOSTILE, ids=[f"U+{ord(c):04X}" for c in HOSTILE])
def test_an_instruction_with_a_control_character_is_refused(tiny_registry: ModelRegistry, control: str) -> None:
    request = pb.EditRequest(image=image_pb2.Image(data=_png()), instruction=f"make it{control} pink")
    with pytest.raises(InvalidArgument) as raised:
        prepare_edit(request, tiny_registry.get("qwen-image-edit-2511"), max_bytes=10**6, max_pixels=10**7, prefix="")
    assert [v.field for v in raised.value.field_violations] == ["instruction"]


def test_a_prompt_on_several_lines_is_kept_as_written(tiny_registry: ModelRegistry) -> None:
    prepared = prepare_generate(
        pb.GenerateRequest(prompt="a cup of juice,\n\tstudio light"), tiny_registry.get("z-image-turbo"), prefix=""
    )
    assert prepared.job.prompt == "a cup of juice,\n\tstudio light"
