"""A limit only the diffusion service knows (its steps range) reaches the caller named by the caller's fields."""

from __future__ import annotations

import grpc
import pytest

from adgen_client import AdGenError, AsyncAdGenClient
from tests.live_services import Services

pytestmark = [pytest.mark.integration]

KEYWORD = "여름 느낌 딸기 생과일 주스"
TOO_MANY_STEPS = 1000  # The orchestrator takes any positive count; the diffusion service knows each model's range.


async def test_a_unary_callers_error_names_its_own_field_in_the_violation_and_the_message(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=60) as client:
        with pytest.raises(AdGenError) as raised:
            await client.create_ad(KEYWORD, width=64, height=64, num_inference_steps=TOO_MANY_STEPS)
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.metadata["service"] == "diffusion"
    assert [violation.field for violation in error.field_violations] == ["num_inference_steps"]
    assert "num_inference_steps" in error.message and "request." not in error.message


async def test_a_stream_callers_error_names_the_field_in_its_stream_request(services: Services) -> None:
    async with AsyncAdGenClient(services.orchestrator, timeout=60) as client:
        with pytest.raises(AdGenError) as raised:
            [
                event
                async for event in client.stream_create_ad(
                    KEYWORD, width=64, height=64, num_inference_steps=TOO_MANY_STEPS
                )
            ]
    error = raised.value
    assert [violation.field for violation in error.field_violations] == ["request.num_inference_steps"]
    assert "request.num_inference_steps" in error.message
