"""DiffusionService over real gRPC on a loopback port, serving the tiny twins through real diffusers."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from adgen.diffusion.v1 import diffusion_service_pb2 as pb
from adgen.diffusion.v1 import diffusion_service_pb2_grpc as pb_grpc
from adgen.type.v1 import image_pb2, progress_pb2
from adgen_diffusion.config import DiffusionSettings
from adgen_diffusion.engine import DiffusionEngine
from adgen_diffusion.registry import ModelRegistry
from adgen_diffusion.server import create_server
from adgen_runtime.server import RunningServer
from adgen_wire.channel import create_aio_channel
from tests.live_services import unused_loopback_port

pytestmark = pytest.mark.integration

SERVICE = "adgen.diffusion.v1.DiffusionService"


@pytest.fixture(scope="module")
async def server(tiny_models_dir: Path) -> AsyncIterator[RunningServer]:
    settings = DiffusionSettings(host="127.0.0.1", port=0, tiny=True, models_dir=tiny_models_dir, device="cpu")
    running = await create_server(settings)
    yield running
    await running.stop(None)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[pb_grpc.DiffusionServiceAsyncStub]:
    async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.DiffusionServiceStub(channel)


def _generate(**fields: object) -> pb.GenerateRequest:
    defaults: dict[str, object] = {"prompt": "a strawberry smoothie", "width": 64, "height": 96, "seed": 3}
    defaults.update(fields)
    request = pb.GenerateRequest(**defaults)  # type: ignore[arg-type]
    request.num_inference_steps = 2
    return request


async def _status_of(call: aio.UnaryUnaryCall) -> tuple[grpc.StatusCode, status_pb2.Status]:  # type: ignore[type-arg]
    with pytest.raises(aio.AioRpcError) as raised:
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    return raised.value.code(), status


def _detail(status: status_pb2.Status, kind: type) -> object:
    for packed in status.details:
        message = kind()
        if packed.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} in the status")


async def test_health_reports_the_service_serving(server: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_list_models_shows_every_id_with_licence_and_availability(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest())
    models = {model.id: model for model in reply.models}
    assert set(models) >= {"flux2-klein-4b", "flux2-klein-9b", "qwen-image-edit-2511", "z-image-turbo"}
    assert models["flux2-klein-9b"].commercial_use is False
    assert models["qwen-image-edit-2511"].tasks == [pb.MODEL_TASK_IMAGE_EDIT]
    assert models["z-image-turbo"].available_locally and models["z-image-turbo"].default_steps == 8


async def test_list_models_carries_each_models_memory_plan_for_this_machine(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest())
    for model in reply.models:
        plan = model.plan
        assert plan.fits and plan.summary and plan.quality_trade == "none"
        assert {c.component for c in plan.components} == {"transformer", "text_encoder", "vae"}
        assert 0 < plan.weight_bytes < plan.peak_host_bytes <= plan.host_budget_bytes
        # On the CPU the twins live in host RAM, resident and unquantized.
        assert {c.residency for c in plan.components} == {pb.COMPONENT_RESIDENCY_DEVICE}
        assert (plan.width, plan.height) == (256, 256)  # the tiny native side


async def test_load_and_unload_return_memory_reports(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    loaded = await stub.LoadModel(pb.LoadModelRequest(model_id="z-image-turbo"))
    assert loaded.model.state == pb.MODEL_STATE_LOADED and loaded.memory.model_bytes > 0
    assert loaded.load_duration.ToNanoseconds() > 0
    listed = await stub.ListModels(pb.ListModelsRequest())
    assert {m.id: m.state for m in listed.models}["z-image-turbo"] == pb.MODEL_STATE_LOADED
    unloaded = await stub.UnloadModel(pb.UnloadModelRequest())
    assert unloaded.model_id == "z-image-turbo"
    assert unloaded.memory.verified and unloaded.memory.leaked_modules == 0 and unloaded.memory.host_rss_bytes > 0


async def test_unloading_a_model_that_is_not_resident_changes_nothing(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    await stub.LoadModel(pb.LoadModelRequest(model_id="z-image-turbo"))
    reply = await stub.UnloadModel(pb.UnloadModelRequest(model_id="qwen-image-edit-2511"))
    assert reply.model_id == "" and reply.memory.model_bytes > 0 and not reply.HasField("unload_duration")
    listed = await stub.ListModels(pb.ListModelsRequest())
    assert {m.id: m.state for m in listed.models}["z-image-turbo"] == pb.MODEL_STATE_LOADED


async def test_generate_returns_a_decodable_png_of_the_requested_size(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    reply = await stub.Generate(_generate(image_count=2))
    assert [image.seed for image in reply.images] == [3, 4]
    first = reply.images[0].image
    decoded = Image.open(io.BytesIO(first.data))
    assert (decoded.format, decoded.size) == ("PNG", (64, 96))
    assert (first.format, first.width, first.height) == (image_pb2.IMAGE_FORMAT_PNG, 64, 96)
    assert reply.info.model_id == "flux2-klein-4b" and reply.info.num_inference_steps == 2
    assert reply.info.timings.total.ToNanoseconds() >= reply.info.timings.denoise.ToNanoseconds() > 0


async def test_generate_writes_webp_when_asked(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    reply = await stub.Generate(_generate(model_id="z-image-turbo", output_format=image_pb2.IMAGE_FORMAT_WEBP))
    assert Image.open(io.BytesIO(reply.images[0].image.data)).format == "WEBP"


async def test_stream_generate_yields_progress_then_the_result(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    events = [event async for event in stub.StreamGenerate(pb.StreamGenerateRequest(request=_generate()))]
    assert [e.WhichOneof("event") for e in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-1].WhichOneof("event") == "result" and len(events[-1].result.images) == 1
    stages = [e.progress.stage for e in events[:-1]]
    assert stages[0] == progress_pb2.PROGRESS_STAGE_QUEUED and stages[-1] == progress_pb2.PROGRESS_STAGE_DONE
    denoising = [(e.progress.step, e.progress.total_steps) for e in events[:-1] if e.progress.stage == 4]
    assert denoising == [(1, 2), (2, 2)]


async def test_edit_works_on_a_generated_photo(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    photo = (await stub.Generate(_generate(width=128, height=96))).images[0].image
    request = pb.EditRequest(image=image_pb2.Image(data=photo.data), instruction="make the cup blue", seed=1)
    request.num_inference_steps = 2
    reply = await stub.Edit(request)
    edited = reply.images[0].image
    # Width and height left at 0 keep the photo's 4:3 aspect.
    assert edited.width > edited.height and Image.open(io.BytesIO(edited.data)).size == (edited.width, edited.height)
    assert reply.info.model_id == "qwen-image-edit-2511"
    stream_request = pb.StreamEditRequest(request=request)
    events = [event async for event in stub.StreamEdit(stream_request)]
    assert events[-1].result.images[0].image.width == edited.width


async def test_lightning_edit_runs_its_default_four_steps_without_true_cfg(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    listed = {m.id: m for m in (await stub.ListModels(pb.ListModelsRequest())).models}
    lightning = listed["qwen-image-edit-2511-lightning-4step"]
    assert lightning.available_locally and lightning.license == "Apache-2.0"
    assert (lightning.default_steps, lightning.default_guidance_scale) == (4, 1.0)
    assert "lightx2v/Qwen-Image-Edit-2511-Lightning" in lightning.source
    photo = Image.new("RGB", (96, 64), "orange")
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    request = pb.EditRequest(
        model_id=lightning.id, image=image_pb2.Image(data=buffer.getvalue()), instruction="add ice", seed=5
    )
    events = [event async for event in stub.StreamEdit(pb.StreamEditRequest(request=request))]
    result = events[-1].result
    assert (result.info.model_id, result.info.num_inference_steps, result.info.guidance_scale) == (lightning.id, 4, 1.0)
    denoising = [e.progress.step for e in events[:-1] if e.progress.stage == progress_pb2.PROGRESS_STAGE_DENOISING]
    assert denoising == [1, 2, 3, 4]


async def test_bad_size_and_empty_prompt_are_invalid_argument_naming_each_field(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    code, status = await _status_of(stub.Generate(_generate(prompt="  ", width=70)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "INVALID_ARGUMENT"
    bad = _detail(status, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["prompt", "width"]


@pytest.mark.parametrize(
    ("fields", "steps", "field"),
    [
        ({"image_count": 5}, 2, "image_count"),
        ({}, 0, "num_inference_steps"),
        ({}, 101, "num_inference_steps"),
        ({"guidance_scale": float("nan")}, 2, "guidance_scale"),
    ],
)
async def test_out_of_range_knobs_are_invalid_argument_on_their_field(
    stub: pb_grpc.DiffusionServiceAsyncStub, fields: dict[str, object], steps: int, field: str
) -> None:
    request = _generate(**fields)
    request.num_inference_steps = steps
    code, status = await _status_of(stub.Generate(request))
    bad = _detail(status, error_details_pb2.BadRequest)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(bad, error_details_pb2.BadRequest) and [v.field for v in bad.field_violations] == [field]


async def test_stream_errors_name_fields_inside_the_wrapped_request(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    call = stub.StreamGenerate(pb.StreamGenerateRequest(request=_generate(prompt="")))
    with pytest.raises(aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    bad = _detail(status, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest) and bad.field_violations[0].field == "request.prompt"


async def test_size_alone_carries_the_invalid_size_reason(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    code, status = await _status_of(stub.Generate(_generate(height=8000)))
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "INVALID_SIZE"


async def test_edit_of_a_non_image_is_invalid_image_on_the_data_field(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    request = pb.EditRequest(image=image_pb2.Image(data=b"GIF89a-not-really"), instruction="brighter")
    code, status = await _status_of(stub.Edit(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = _detail(status, error_details_pb2.ErrorInfo), _detail(status, error_details_pb2.BadRequest)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "INVALID_IMAGE"
    assert isinstance(bad, error_details_pb2.BadRequest) and bad.field_violations[0].field == "image.data"


async def test_unknown_model_is_not_found_with_resource_info(stub: pb_grpc.DiffusionServiceAsyncStub) -> None:
    code, status = await _status_of(stub.Generate(_generate(model_id="midjourney-v7")))
    assert code == grpc.StatusCode.NOT_FOUND
    resource = _detail(status, error_details_pb2.ResourceInfo)
    assert isinstance(resource, error_details_pb2.ResourceInfo) and resource.resource_name == "midjourney-v7"


async def test_text_to_image_on_the_edit_model_is_failed_precondition(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    code, status = await _status_of(stub.Generate(_generate(model_id="qwen-image-edit-2511")))
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "MODEL_TASK_UNSUPPORTED"


async def test_a_model_no_plan_fits_is_refused_by_every_rpc_with_the_budgets(tiny_models_dir: Path) -> None:
    # 1 GiB of host RAM cannot hold even the service process: no plan of any model fits.
    settings = DiffusionSettings(
        host="127.0.0.1", port=0, tiny=True, models_dir=tiny_models_dir, device="cpu", host_memory_budget="1GiB"
    )
    running = await create_server(settings)
    photo = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(photo, format="PNG")
    try:
        async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.DiffusionServiceStub(channel)
            listed = await stub.ListModels(pb.ListModelsRequest())
            assert not any(model.plan.fits for model in listed.models)
            assert all(model.plan.host_budget_bytes == 1024**3 for model in listed.models)
            calls: list[aio.UnaryUnaryCall] = [  # type: ignore[type-arg]
                stub.LoadModel(pb.LoadModelRequest(model_id="z-image-turbo")),
                stub.Generate(_generate(model_id="z-image-turbo")),
                stub.Edit(pb.EditRequest(instruction="make it pink", image=image_pb2.Image(data=photo.getvalue()))),
            ]
            for call in calls:
                code, status = await _status_of(call)
                info = _detail(status, error_details_pb2.ErrorInfo)
                assert code == grpc.StatusCode.FAILED_PRECONDITION
                assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "MODEL_DOES_NOT_FIT"
                assert info.metadata["host_budget_bytes"] == str(1024**3)
                assert int(info.metadata["smallest_plan_host_bytes"]) > 1024**3
                assert "does not fit this machine" in status.message and "GiB" in status.message
            assert running.port  # the server answered every refusal and is still up
    finally:
        await running.stop(None)


async def test_a_deadline_stops_the_job_and_the_server_serves_the_next_call(
    stub: pb_grpc.DiffusionServiceAsyncStub,
) -> None:
    await stub.LoadModel(pb.LoadModelRequest(model_id="flux2-klein-4b"))
    slow = _generate(width=512, height=512, image_count=4)
    slow.num_inference_steps = 100  # several seconds on CPU if it were left running
    with pytest.raises(aio.AioRpcError) as raised:
        await stub.Generate(slow, timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reply = await stub.Generate(_generate(), timeout=30)
    # The abandoned job stopped at its next step, so this one barely waited.
    assert len(reply.images) == 1 and reply.info.timings.queue.ToMilliseconds() < 1500


async def test_server_is_still_serving_after_the_errors(server: RunningServer) -> None:
    async with create_aio_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        generated = await pb_grpc.DiffusionServiceStub(channel).Generate(_generate())
    assert len(generated.images) == 1


@pytest.mark.parametrize("module", ["adgen_client", "adgen_orchestrator"])
def test_importing_the_sdk_or_orchestrator_does_not_import_torch(module: str) -> None:
    probe = f"import sys, {module}; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.split() == ["False", "False"]


async def test_an_incomplete_unload_is_reported_and_readiness_waits_for_a_clean_state(tiny_models_dir: Path) -> None:
    settings = DiffusionSettings(host="127.0.0.1", port=0, tiny=True, models_dir=tiny_models_dir, device="cpu")
    engine = DiffusionEngine(ModelRegistry.load(tiny=True), tiny_models_dir, device="cpu")
    running = await create_server(settings, engine=engine)
    try:
        async with create_aio_channel(f"127.0.0.1:{running.port}") as channel:
            stub, health = pb_grpc.DiffusionServiceStub(channel), health_pb2_grpc.HealthStub(channel)
            await stub.LoadModel(pb.LoadModelRequest(model_id="z-image-turbo"))
            assert engine._resident is not None
            held = engine._resident.pipeline.vae  # someone keeps a module alive
            code, status = await _status_of(stub.UnloadModel(pb.UnloadModelRequest(model_id="z-image-turbo")))
            info = _detail(status, error_details_pb2.ErrorInfo)
            assert code == grpc.StatusCode.INTERNAL
            assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "UNLOAD_INCOMPLETE"
            assert info.metadata["leaked_modules"] == "1"
            checked = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert checked.status == health_pb2.HealthCheckResponse.NOT_SERVING
            del held
            await stub.LoadModel(pb.LoadModelRequest(model_id="z-image-turbo"))
            clean = await stub.UnloadModel(pb.UnloadModelRequest())
            assert clean.memory.verified
            checked = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(None)


class _HeldEngine(DiffusionEngine):
    """An engine whose first job waits for the test, so the test can look at readiness mid-warm-up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.warming, self.release = threading.Event(), threading.Event()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.warming.set()
        assert self.release.wait(timeout=60), "the test never released the warm-up"
        return super().run(*args, **kwargs)


async def _health(port: int) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    async with create_aio_channel(f"127.0.0.1:{port}") as channel:
        checked = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
        )
    return checked.status


async def test_warm_up_loads_the_default_model_before_readiness(tiny_models_dir: Path) -> None:
    port = unused_loopback_port()  # known before create_server returns, so health can be asked mid-warm-up
    settings = DiffusionSettings(
        host="127.0.0.1", port=port, tiny=True, models_dir=tiny_models_dir, device="cpu", warmup=True
    )
    engine = _HeldEngine(ModelRegistry.load(tiny=True), tiny_models_dir, device="cpu")
    starting = asyncio.ensure_future(create_server(settings, engine=engine))
    try:
        assert await asyncio.to_thread(engine.warming.wait, 60)
        assert await _health(port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not starting.done()
    finally:
        engine.release.set()
    running = await starting
    try:
        assert engine.loaded_model_id == settings.default_model
        assert await _health(running.port) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(None)
    assert engine.loaded_model_id is None  # shutdown unloads
