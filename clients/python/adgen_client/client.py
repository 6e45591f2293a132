"""AdGenClient and AsyncAdGenClient: the AdService over gRPC, with errors as AdGenError and QUEUE_FULL retried."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, Unpack

import grpc
from grpc import aio

from adgen.ad.v1 import ad_service_pb2 as ad_pb
from adgen.ad.v1 import ad_service_pb2_grpc as ad_grpc
from adgen_client.errors import AdGenError
from adgen_client.requests import CreateAdOptions, EditAdOptions, PhotoArg, create_ad_request, edit_ad_request
from adgen_wire.channel import REQUEST_ID_METADATA_KEY, create_aio_channel, create_channel

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 600.0
_QUEUE_FULL = "QUEUE_FULL"


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries a call the server turned away because its GPU queue was full
    (RESOURCE_EXHAUSTED with reason QUEUE_FULL).

    The next attempt waits the server's RetryInfo delay (`default_delay_s` without one), plus up to 10%
    jitter so clients told the same delay do not return together, and only while it fits within the
    call's timeout. `max_attempts` counts the first call. A delay longer than `max_delay_s` is not
    waited out: the error reaches the caller at once, so a person can decide. A stream is retried only
    before its first event. `RetryPolicy(enabled=False)` turns retries off. (UNAVAILABLE is retried by
    the channel itself, up to 3 attempts; nothing else is retried.)
    """

    enabled: bool = True
    max_attempts: int = 3
    max_delay_s: float = 5.0
    default_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first call: it must be at least 1")


DEFAULT_RETRY = RetryPolicy()
_JITTER = 0.1


class _Attempts:
    """One call's attempts under a RetryPolicy: how many were made and how much time is left."""

    def __init__(self, policy: RetryPolicy, timeout: float | None, jitter: random.Random) -> None:
        self._policy = policy
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._jitter = jitter
        self._made = 0

    def timeout(self) -> float | None:
        """The timeout of the next attempt: what is left of the call's."""
        self._made += 1
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def retry_delay(self, error: AdGenError) -> float | None:
        """Seconds to wait before trying again after `error`, or None when `error` is the answer."""
        policy = self._policy
        queue_full = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == _QUEUE_FULL
        if not (policy.enabled and queue_full and self._made < policy.max_attempts):
            return None
        delay = error.retry_after_s if error.retry_after_s is not None else policy.default_delay_s
        if delay > policy.max_delay_s:
            return None
        delay += self._jitter.uniform(0, delay * _JITTER)
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            return None
        return delay


def _metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()


class AdGenClient:
    """Blocking client. Every method takes the same options as `create_ad_request`/`edit_ad_request`
    plus `timeout` (seconds; the server passes the deadline on to its own calls, and retries fit in it).

    >>> with AdGenClient("127.0.0.1:50051") as client:
    ...     ad = client.create_ad("여름 느낌 딸기 생과일 주스", variant_count=2)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._channel = create_channel(target)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry
        self._jitter = random.Random()

    def create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> ad_pb.CreateAdResponse:
        request = create_ad_request(keyword, **options)
        response: ad_pb.CreateAdResponse = self._unary(
            self._stub.CreateAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    def stream_create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> Iterator[ad_pb.StreamCreateAdResponse]:
        request = create_ad_request(keyword, **options)
        wrapped = ad_pb.StreamCreateAdRequest(request=request)
        yield from self._stream(self._stub.StreamCreateAd, wrapped, request.request_id, self._attempts(timeout))

    def edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> ad_pb.EditAdResponse:
        request = edit_ad_request(photo, instruction, **options)
        response: ad_pb.EditAdResponse = self._unary(
            self._stub.EditAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    def stream_edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> Iterator[ad_pb.StreamEditAdResponse]:
        request = edit_ad_request(photo, instruction, **options)
        wrapped = ad_pb.StreamEditAdRequest(request=request)
        yield from self._stream(self._stub.StreamEditAd, wrapped, request.request_id, self._attempts(timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.retry, timeout if timeout is not None else self.timeout, self._jitter)

    def _unary(self, method: Callable[..., Any], request: Any, request_id: str, attempts: _Attempts) -> Any:
        while True:
            try:
                return method(request, timeout=attempts.timeout(), metadata=_metadata(request_id))
            except grpc.RpcError as error:
                failure = AdGenError.from_rpc_error(error)
            delay = attempts.retry_delay(failure)
            if delay is None:
                raise failure from None
            time.sleep(delay)

    def _stream(self, method: Callable[..., Any], request: Any, request_id: str, attempts: _Attempts) -> Iterator[Any]:
        while True:
            call = method(request, timeout=attempts.timeout(), metadata=_metadata(request_id))
            received = False
            try:
                for event in call:
                    received = True
                    yield event
                return
            except grpc.RpcError as error:
                failure = AdGenError.from_rpc_error(error)
            finally:
                call.cancel()  # A no-op once finished; frees the server's work if the caller stopped early.
            # After an event the caller has seen part of the answer: a second attempt would repeat it.
            delay = None if received else attempts.retry_delay(failure)
            if delay is None:
                raise failure from None
            time.sleep(delay)


class AsyncAdGenClient:
    """asyncio client with the same methods and retries as AdGenClient; streams are async iterators.

    >>> async with AsyncAdGenClient("127.0.0.1:50051") as client:
    ...     async for event in client.stream_create_ad("여름 느낌 딸기 생과일 주스"):
    ...         print(event.WhichOneof("event"))
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._channel = create_aio_channel(target)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout
        self.retry = retry
        self._jitter = random.Random()

    async def create_ad(
        self,
        keyword: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> ad_pb.CreateAdResponse:
        request = create_ad_request(keyword, **options)
        response: ad_pb.CreateAdResponse = await self._unary(
            self._stub.CreateAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    async def stream_create_ad(
        self,
        keyword: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> AsyncIterator[ad_pb.StreamCreateAdResponse]:
        request = create_ad_request(keyword, **options)
        wrapped = ad_pb.StreamCreateAdRequest(request=request)
        async for event in self._stream(
            self._stub.StreamCreateAd, wrapped, request.request_id, self._attempts(timeout)
        ):
            yield event

    async def edit_ad(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> ad_pb.EditAdResponse:
        # Reading a photo file blocks: off the event loop.
        request = await asyncio.to_thread(edit_ad_request, photo, instruction, **options)
        response: ad_pb.EditAdResponse = await self._unary(
            self._stub.EditAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    async def stream_edit_ad(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> AsyncIterator[ad_pb.StreamEditAdResponse]:
        # Reading a photo file blocks: off the event loop.
        request = await asyncio.to_thread(edit_ad_request, photo, instruction, **options)
        wrapped = ad_pb.StreamEditAdRequest(request=request)
        async for event in self._stream(self._stub.StreamEditAd, wrapped, request.request_id, self._attempts(timeout)):
            yield event

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    def _attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.retry, timeout if timeout is not None else self.timeout, self._jitter)

    async def _unary(self, method: Callable[..., Any], request: Any, request_id: str, attempts: _Attempts) -> Any:
        while True:
            try:
                return await method(request, timeout=attempts.timeout(), metadata=_metadata(request_id))
            except aio.AioRpcError as error:
                failure = AdGenError.from_rpc_error(error)
            delay = attempts.retry_delay(failure)
            if delay is None:
                raise failure from None
            await asyncio.sleep(delay)

    async def _stream(
        self, method: Callable[..., Any], request: Any, request_id: str, attempts: _Attempts
    ) -> AsyncIterator[Any]:
        while True:
            call = method(request, timeout=attempts.timeout(), metadata=_metadata(request_id))
            received = False
            try:
                async for event in call:
                    received = True
                    yield event
                return
            except aio.AioRpcError as error:
                failure = AdGenError.from_rpc_error(error)
            finally:
                call.cancel()
            # After an event the caller has seen part of the answer: a second attempt would repeat it.
            delay = None if received else attempts.retry_delay(failure)
            if delay is None:
                raise failure from None
            await asyncio.sleep(delay)
