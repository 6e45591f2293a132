"""CopywriterService over gRPC: proto in, validation, the engine, proto out; nothing else lives here."""

from __future__ import annotations

from adgen.copywriter.v1 import copywriter_service_pb2 as pb
from adgen.copywriter.v1 import copywriter_service_pb2_grpc as pb_grpc
from adgen_copywriter.domain import CopyError
from adgen_copywriter.engine import CopyEngine
from adgen_copywriter.proto_mapping import edit_instruction_response, generate_copy_response, status_error
from adgen_copywriter.validation import brief_from_request, edit_request_from
from adgen_runtime import Context

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CopywriterService"].full_name


class CopywriterServicer(pb_grpc.CopywriterServiceServicer):
    """Thin adapter over `CopyEngine`."""

    def __init__(self, engine: CopyEngine) -> None:
        self.engine = engine

    async def GenerateCopy(self, request: pb.GenerateCopyRequest, context: Context) -> pb.GenerateCopyResponse:
        brief = brief_from_request(request)
        try:
            draft = await self.engine.generate_copy(brief)
        except CopyError as error:
            raise status_error(error) from error
        return generate_copy_response(draft)

    async def WriteEditInstruction(
        self, request: pb.WriteEditInstructionRequest, context: Context
    ) -> pb.WriteEditInstructionResponse:
        edit = edit_request_from(request)
        try:
            written = await self.engine.write_edit_instruction(edit)
        except CopyError as error:
            raise status_error(error) from error
        return edit_instruction_response(written)
