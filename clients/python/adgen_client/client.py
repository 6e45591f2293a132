"""AdGenClient and AsyncAdGenClient: the AdService over gRPC, with errors as AdGenError."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
from grpc import aio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_client.channel import REQUEST_ID_METADATA_KEY, create_aio_channel, create_channel
from adgen_client.errors import AdGenError
from adgen_client.requests import CreateAdOptions, EditAdOptions, PhotoArg, create_ad_request, edit_ad_request

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 600.0


def _metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()


class AdGenClient:
    """Blocking client. Every method takes the same options as `create_ad_request`/`edit_ad_request`
    plus `timeout` (seconds; the server passes the deadline on to its own calls).

    >>> with AdGenClient("127.0.0.1:50051") as client:
    ...     ad = client.create_ad("여름 느낌 딸기 생과일 주스", variant_count=2)
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self._channel = create_channel(target)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout

    def create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> ad_pb.CreateAdResponse:
        request = create_ad_request(keyword, **options)
        try:
            return self._stub.CreateAd(request, timeout=self._timeout(timeout), metadata=_metadata(request.request_id))
        except grpc.RpcError as error:
            raise AdGenError.from_rpc_error(error) from None

    def stream_create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> Iterator[ad_pb.StreamCreateAdResponse]:
        request = create_ad_request(keyword, **options)
        yield from self._stream(
            self._stub.StreamCreateAd(
                ad_pb.StreamCreateAdRequest(request=request),
                timeout=self._timeout(timeout),
                metadata=_metadata(request.request_id),
            )
        )

    def edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> ad_pb.EditAdResponse:
        request = edit_ad_request(photo, instruction, **options)
        try:
            return self._stub.EditAd(request, timeout=self._timeout(timeout), metadata=_metadata(request.request_id))
        except grpc.RpcError as error:
            raise AdGenError.from_rpc_error(error) from None

    def stream_edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> Iterator[ad_pb.StreamEditAdResponse]:
        request = edit_ad_request(photo, instruction, **options)
        yield from self._stream(
            self._stub.StreamEditAd(
                ad_pb.StreamEditAdRequest(request=request),
                timeout=self._timeout(timeout),
                metadata=_metadata(request.request_id),
            )
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    @staticmethod
    def _stream(call: Any) -> Iterator[Any]:
        try:
            yield from call
        except grpc.RpcError as error:
            raise AdGenError.from_rpc_error(error) from None
        finally:
            call.cancel()  # A no-op once finished; frees the server's work if the caller stopped early.


class AsyncAdGenClient:
    """asyncio client with the same methods as AdGenClient; streams are async iterators.

    >>> async with AsyncAdGenClient("127.0.0.1:50051") as client:
    ...     async for event in client.stream_create_ad("여름 느낌 딸기 생과일 주스"):
    ...         print(event.WhichOneof("event"))
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self._channel = create_aio_channel(target)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout

    async def create_ad(
        self,
        keyword: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> ad_pb.CreateAdResponse:
        request = create_ad_request(keyword, **options)
        try:
            return await self._stub.CreateAd(
                request, timeout=self._timeout(timeout), metadata=_metadata(request.request_id)
            )
        except aio.AioRpcError as error:
            raise AdGenError.from_rpc_error(error) from None

    async def stream_create_ad(
        self,
        keyword: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        request = create_ad_request(keyword, **options)
        call = self._stub.StreamCreateAd(
            ad_pb.StreamCreateAdRequest(request=request),
            timeout=self._timeout(timeout),
            metadata=_metadata(request.request_id),
        )
        async for event in self._stream(call):
            yield event

    async def edit_ad(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> ad_pb.EditAdResponse:
        request = edit_ad_request(photo, instruction, **options)
        try:
            return await self._stub.EditAd(
                request, timeout=self._timeout(timeout), metadata=_metadata(request.request_id)
            )
        except aio.AioRpcError as error:
            raise AdGenError.from_rpc_error(error) from None

    async def stream_edit_ad(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        request = edit_ad_request(photo, instruction, **options)
        call = self._stub.StreamEditAd(
            ad_pb.StreamEditAdRequest(request=request),
            timeout=self._timeout(timeout),
            metadata=_metadata(request.request_id),
        )
        async for event in self._stream(call):
            yield event

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    @staticmethod
    async def _stream(call: Any) -> AsyncIterator[Any]:
        try:
            async for event in call:
                yield event
        except aio.AioRpcError as error:
            raise AdGenError.from_rpc_error(error) from None
        finally:
            call.cancel()
