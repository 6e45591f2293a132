"""AdGenClient and AsyncAdGenClient: the AdService over gRPC, errors as AdGenError, QUEUE_FULL/RATE_LIMITED retried."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
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
from adgen_client.connection import DEFAULT_TARGET as DEFAULT_TARGET
from adgen_client.connection import CertificateArg, Connection, connect, open_aio_channel, open_channel
from adgen_client.errors import AdGenError
from adgen_client.progress import ProgressEvent, StreamedAd, create_progress, edit_progress
from adgen_client.requests import CreateAdOptions, EditAdOptions, PhotoArg, create_ad_request, edit_ad_request
from adgen_wire.channel import REQUEST_ID_METADATA_KEY

DEFAULT_TIMEOUT_S = 600.0
# Refusals that say "later": the GPU queue was full, or the caller went over its rate limit.
_RETRIED_REASONS = frozenset({"QUEUE_FULL", "RATE_LIMITED"})
ProgressCallback = Callable[[ProgressEvent], object]
"""Called with each progress event of `create_ad_and_wait` / `edit_ad_and_wait` (async clients also await
a callback that returns an awaitable)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries a call the server turned away for now: its GPU queue was full, or the caller
    went over its rate limit (RESOURCE_EXHAUSTED with reason QUEUE_FULL or RATE_LIMITED).

    The next attempt waits the server's RetryInfo delay (`default_delay_s` without one), plus up to 10%
    jitter so clients told the same delay do not return together, and only while it fits within the
    call's timeout. `max_attempts` counts the first call. A delay longer than `max_delay_s` is not
    waited out: the error reaches the caller at once, so a person can decide. A stream is retried only
    before its first event. Waits add up to at most `max_total_wait_s`. `RetryPolicy(enabled=False)`
    (or a client's `max_retries=0`) turns retries off. (UNAVAILABLE is retried by the channel itself,
    up to 3 attempts; nothing else is retried.)
    """

    enabled: bool = True
    max_attempts: int = 3
    max_delay_s: float = 5.0
    default_delay_s: float = 1.0
    max_total_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts counts the first call: it must be at least 1")
        if self.max_total_wait_s < 0:
            raise ValueError("max_total_wait_s must not be negative")

    @classmethod
    def with_max_retries(cls, max_retries: int, max_total_wait_s: float | None = None) -> RetryPolicy:
        """The default policy with `max_retries` retries after the first call (0: none).

        Args:
            max_retries: retries after the first attempt; 0 disables retrying.
            max_total_wait_s: the most seconds all waits between attempts may add up to.

        Returns:
            The policy.

        Raises:
            ValueError: a negative `max_retries` or `max_total_wait_s`.
        """
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        wait = cls.max_total_wait_s if max_total_wait_s is None else max_total_wait_s
        return cls(enabled=max_retries > 0, max_attempts=max_retries + 1, max_total_wait_s=wait)


DEFAULT_RETRY = RetryPolicy()
_JITTER = 0.1


class _Attempts:
    """One call's attempts under a RetryPolicy: how many were made and how much time is left."""

    def __init__(self, policy: RetryPolicy, timeout: float | None, jitter: random.Random) -> None:
        self._policy = policy
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._jitter = jitter
        self._made = 0
        self._waited_s = 0.0

    def timeout(self) -> float | None:
        """The timeout of the next attempt: what is left of the call's."""
        self._made += 1
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def retry_delay(self, error: AdGenError) -> float | None:
        """Seconds to wait before trying again after `error`, or None when `error` is the answer."""
        policy = self._policy
        later = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason in _RETRIED_REASONS
        if not (policy.enabled and later and self._made < policy.max_attempts):
            return None
        delay = error.retry_after_s if error.retry_after_s is not None else policy.default_delay_s
        if delay > policy.max_delay_s:
            return None
        delay += self._jitter.uniform(0, delay * _JITTER)
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            return None
        if self._waited_s + delay > policy.max_total_wait_s:
            return None
        self._waited_s += delay
        return delay


def _policy(retry: RetryPolicy, max_retries: int | None, max_retry_wait_s: float | None) -> RetryPolicy:
    if max_retries is None and max_retry_wait_s is None:
        return retry
    attempts = retry.max_attempts if max_retries is None else max_retries + 1
    wait = retry.max_total_wait_s if max_retry_wait_s is None else max_retry_wait_s
    if max_retries is not None and max_retries < 0:
        raise ValueError("max_retries must not be negative")
    return dataclasses.replace(
        retry, enabled=retry.enabled and attempts > 1, max_attempts=attempts, max_total_wait_s=wait
    )


async def _reported(on_progress: ProgressCallback, progress: ProgressEvent) -> None:
    outcome = on_progress(progress)
    if inspect.isawaitable(outcome):
        await outcome


def _whole(streamed: StreamedAd, event: ad_pb.StreamCreateAdResponse) -> ad_pb.StreamCreateAdResponse:
    try:
        return streamed.whole(event)
    except LookupError as error:
        raise AdGenError(grpc.StatusCode.INTERNAL, str(error)) from None


def _metadata(request_id: str) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_METADATA_KEY, request_id),) if request_id else ()


class AdGenClient:
    """Blocking client. Every method takes the same options as `create_ad_request`/`edit_ad_request`
    plus `timeout` (seconds; the server passes the deadline on to its own calls, and retries fit in it).

    >>> with AdGenClient("127.0.0.1:50051") as client:
    ...     ad = client.create_ad("여름 느낌 딸기 생과일 주스", variant_count=2)

    An orchestrator with TLS and authentication on (the token may also come from ADGEN_TOKEN):

    >>> with AdGenClient("ads.example.com:443", root_certificates="ca.pem", token=api_key) as client:
    ...     ad = client.create_ad("여름 느낌 딸기 생과일 주스")
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        root_certificates: CertificateArg | None = None,
        tls: bool = False,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_retries: int | None = None,
        max_retry_wait_s: float | None = None,
    ) -> None:
        """Opens a channel to `target` (connections are made lazily, on the first call).

        Args:
            target: host:port of the orchestrator; None reads ADGEN_TARGET, else 127.0.0.1:50051.
            credentials: the channel's TLS credentials, e.g. `tls_credentials(ca, certificate_chain=...,
                private_key=...)` for mTLS; the token is added to them.
            root_certificates: TLS with this CA (PEM bytes or text, or a file path) instead of the system's.
            tls: TLS with the system's roots (implied by `credentials` and `root_certificates`).
            token: the bearer token sent as `authorization: Bearer <token>`; None reads ADGEN_TOKEN, "" sends
                none. It goes only over TLS or to a loopback target, and is kept nowhere but the channel's
                credentials (never in a repr, an error or a log).
            timeout: default deadline of each call, in seconds (None: no deadline).
            retry: how QUEUE_FULL and RATE_LIMITED refusals are retried.
            max_retries: retries after the first attempt, overriding `retry` (0 disables retrying).
            max_retry_wait_s: the most seconds the waits between attempts may add up to, overriding `retry`.

        Raises:
            ValueError: a negative `max_retries` or `max_retry_wait_s`; both `credentials` and
                `root_certificates`; an unreadable CA file; a token for a plaintext, non-loopback target.
        """
        self.connection: Connection = connect(
            target, credentials=credentials, root_certificates=root_certificates, tls=tls, token=token
        )
        self._channel = open_channel(self.connection)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout
        self.retry = _policy(retry, max_retries, max_retry_wait_s)
        self._jitter = random.Random()

    def create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> ad_pb.CreateAdResponse:
        """Creates an ad: copy and `variant_count` images.

        Args:
            keyword: the Korean product keyword, e.g. "여름 느낌 딸기 생과일 주스".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `CreateAdOptions` (placement, tone, variant_count, seed, facts, caption_length,
                emoji_level, output_format, quality, request_id...).

        Returns:
            The finished ad.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        request = create_ad_request(keyword, **options)
        response: ad_pb.CreateAdResponse = self._unary(
            self._stub.CreateAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    def stream_create_ad(
        self, keyword: str, *, timeout: float | None = None, **options: Unpack[CreateAdOptions]
    ) -> Iterator[ad_pb.StreamCreateAdResponse]:
        """Creates an ad, yielding the copy, progress, each image, then the result as they happen.

        Args:
            keyword: the Korean product keyword, e.g. "여름 느낌 딸기 생과일 주스".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `CreateAdOptions` (placement, tone, variant_count, seed, facts, caption_length,
                emoji_level, output_format, quality, request_id...).

        Yields:
            The stream's events; `progress.create_progress(event)` reads one as a typed `ProgressEvent`. The
            final `result` is made whole: the server does not repeat the bytes of images it already streamed
            (`data_in_stream`), and the SDK fills them back in, so it equals what `create_ad` returns.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        request = create_ad_request(keyword, **options)
        wrapped = ad_pb.StreamCreateAdRequest(request=request)
        streamed = StreamedAd()
        for event in self._stream(self._stub.StreamCreateAd, wrapped, request.request_id, self._attempts(timeout)):
            yield _whole(streamed, event)

    def edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> ad_pb.EditAdResponse:
        """Edits a product photo; the result keeps the photo's size.

        Args:
            photo: the product photo, as the encoded file's bytes or a path.
            instruction: what to change, e.g. "커피를 딸기 라떼로 바꿔줘".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `EditAdOptions` (seed, output_format, model_id, request_id...).

        Returns:
            The edited image.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        request = edit_ad_request(photo, instruction, **options)
        response: ad_pb.EditAdResponse = self._unary(
            self._stub.EditAd, request, request.request_id, self._attempts(timeout)
        )
        return response

    def stream_edit_ad(
        self, photo: PhotoArg, instruction: str, *, timeout: float | None = None, **options: Unpack[EditAdOptions]
    ) -> Iterator[ad_pb.StreamEditAdResponse]:
        """Edits a product photo, yielding progress, then the result.

        Args:
            photo: the product photo, as the encoded file's bytes or a path.
            instruction: what to change, e.g. "커피를 딸기 라떼로 바꿔줘".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `EditAdOptions` (seed, output_format, model_id, request_id...).

        Yields:
            Raw stream events; `progress.edit_progress(event)` reads one as a typed `ProgressEvent`.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        request = edit_ad_request(photo, instruction, **options)
        wrapped = ad_pb.StreamEditAdRequest(request=request)
        yield from self._stream(self._stub.StreamEditAd, wrapped, request.request_id, self._attempts(timeout))

    def create_ad_and_wait(
        self,
        keyword: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        **options: Unpack[CreateAdOptions],
    ) -> ad_pb.CreateAdResponse:
        """Creates an ad over the stream, reporting progress, and returns the finished ad.

        Args:
            keyword: the Korean product keyword, e.g. "여름 느낌 딸기 생과일 주스".
            on_progress: called with each typed `ProgressEvent` (queue, loading, denoising steps).
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `CreateAdOptions` (placement, tone, variant_count, seed, facts, caption_length,
                emoji_level, output_format, quality, request_id...).

        Returns:
            The finished ad, as `create_ad` returns it.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        for event in self.stream_create_ad(keyword, timeout=timeout, **options):
            progress = create_progress(event)
            if progress is not None and on_progress is not None:
                on_progress(progress)
            if event.HasField("result"):
                return event.result
        raise AdGenError(grpc.StatusCode.INTERNAL, "the server ended the stream without a result")

    def edit_ad_and_wait(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        **options: Unpack[EditAdOptions],
    ) -> ad_pb.EditAdResponse:
        """Edits a photo over the stream, reporting progress, and returns the edited image.

        Args:
            photo: the product photo, as the encoded file's bytes or a path.
            instruction: what to change, e.g. "커피를 딸기 라떼로 바꿔줘".
            on_progress: called with each typed `ProgressEvent`.
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `EditAdOptions` (seed, output_format, model_id, request_id...).

        Returns:
            The edited image, as `edit_ad` returns it.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        for event in self.stream_edit_ad(photo, instruction, timeout=timeout, **options):
            progress = edit_progress(event)
            if progress is not None and on_progress is not None:
                on_progress(progress)
            if event.HasField("result"):
                return event.result
        raise AdGenError(grpc.StatusCode.INTERNAL, "the server ended the stream without a result")

    def list_models(self, *, timeout: float | None = None) -> list[ad_pb.Model]:
        """The image models the server can run: id, tasks, licence, commercial use and whether each fits.

        Args:
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.

        Returns:
            The models, sorted by id; pass a model's `id` as the `model_id` option.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (Unavailable, Timeout...).
        """
        response: ad_pb.ListModelsResponse = self._unary(
            self._stub.ListModels, ad_pb.ListModelsRequest(), "", self._attempts(timeout)
        )
        return list(response.models)

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __repr__(self) -> str:
        return f"AdGenClient({self.connection!r})"

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
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        root_certificates: CertificateArg | None = None,
        tls: bool = False,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_retries: int | None = None,
        max_retry_wait_s: float | None = None,
    ) -> None:
        """Opens an asyncio channel to `target`; the arguments (TLS, token, ADGEN_TARGET, ADGEN_TOKEN) are
        AdGenClient's."""
        self.connection: Connection = connect(
            target, credentials=credentials, root_certificates=root_certificates, tls=tls, token=token
        )
        self._channel = open_aio_channel(self.connection)
        self._stub = ad_grpc.AdServiceStub(self._channel)
        self.timeout = timeout
        self.retry = _policy(retry, max_retries, max_retry_wait_s)
        self._jitter = random.Random()

    async def create_ad(
        self,
        keyword: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> ad_pb.CreateAdResponse:
        """Creates an ad: copy and `variant_count` images.

        Args:
            keyword: the Korean product keyword, e.g. "여름 느낌 딸기 생과일 주스".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `CreateAdOptions` (placement, tone, variant_count, seed, facts, caption_length,
                emoji_level, output_format, quality, request_id...).

        Returns:
            The finished ad.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        # Reading product photo and logo files blocks: off the event loop.
        request = await asyncio.to_thread(create_ad_request, keyword, **options)
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
        """Creates an ad, yielding the copy, progress, each image, then the result as they happen.

        Args:
            keyword: the Korean product keyword, e.g. "여름 느낌 딸기 생과일 주스".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `CreateAdOptions` (placement, tone, variant_count, seed, facts, caption_length,
                emoji_level, output_format, quality, request_id...).

        Yields:
            The stream's events; `progress.create_progress(event)` reads one as a typed `ProgressEvent`. The
            final `result` is made whole: the server does not repeat the bytes of images it already streamed
            (`data_in_stream`), and the SDK fills them back in, so it equals what `create_ad` returns.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        # Reading product photo and logo files blocks: off the event loop.
        request = await asyncio.to_thread(create_ad_request, keyword, **options)
        wrapped = ad_pb.StreamCreateAdRequest(request=request)
        streamed = StreamedAd()
        async for event in self._stream(
            self._stub.StreamCreateAd, wrapped, request.request_id, self._attempts(timeout)
        ):
            yield _whole(streamed, event)

    async def edit_ad(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> ad_pb.EditAdResponse:
        """Edits a product photo; the result keeps the photo's size.

        Args:
            photo: the product photo, as the encoded file's bytes or a path.
            instruction: what to change, e.g. "커피를 딸기 라떼로 바꿔줘".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `EditAdOptions` (seed, output_format, model_id, request_id...).

        Returns:
            The edited image.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
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
        """Edits a product photo, yielding progress, then the result.

        Args:
            photo: the product photo, as the encoded file's bytes or a path.
            instruction: what to change, e.g. "커피를 딸기 라떼로 바꿔줘".
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.
            **options: `EditAdOptions` (seed, output_format, model_id, request_id...).

        Yields:
            Raw stream events; `progress.edit_progress(event)` reads one as a typed `ProgressEvent`.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (BadRequest, QueueFull, Timeout...).
            TypeError: an unknown option name (the message suggests the nearest valid one).
            ValueError: an unknown enum name (placement, tone, format...).
        """
        # Reading a photo file blocks: off the event loop.
        request = await asyncio.to_thread(edit_ad_request, photo, instruction, **options)
        wrapped = ad_pb.StreamEditAdRequest(request=request)
        async for event in self._stream(self._stub.StreamEditAd, wrapped, request.request_id, self._attempts(timeout)):
            yield event

    async def create_ad_and_wait(
        self,
        keyword: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[CreateAdOptions],
    ) -> ad_pb.CreateAdResponse:
        """Creates an ad over the stream, reporting progress, and returns the finished ad; see
        `AdGenClient.create_ad_and_wait`. A callback that returns an awaitable is awaited."""
        async for event in self.stream_create_ad(keyword, timeout=timeout, **options):
            progress = create_progress(event)
            if progress is not None and on_progress is not None:
                await _reported(on_progress, progress)
            if event.HasField("result"):
                return event.result
        raise AdGenError(grpc.StatusCode.INTERNAL, "the server ended the stream without a result")

    async def edit_ad_and_wait(
        self,
        photo: PhotoArg,
        instruction: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
        **options: Unpack[EditAdOptions],
    ) -> ad_pb.EditAdResponse:
        """Edits a photo over the stream, reporting progress, and returns the edited image; see
        `AdGenClient.edit_ad_and_wait`."""
        async for event in self.stream_edit_ad(photo, instruction, timeout=timeout, **options):
            progress = edit_progress(event)
            if progress is not None and on_progress is not None:
                await _reported(on_progress, progress)
            if event.HasField("result"):
                return event.result
        raise AdGenError(grpc.StatusCode.INTERNAL, "the server ended the stream without a result")

    async def list_models(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a gRPC deadline the server passes on)
    ) -> list[ad_pb.Model]:
        """The image models the server can run: id, tasks, licence, commercial use and whether each fits.

        Args:
            timeout: this call's deadline in seconds (default: the client's); retries fit in it.

        Returns:
            The models, sorted by id; pass a model's `id` as the `model_id` option.

        Raises:
            AdGenError: the call failed; the subclass names the gRPC code (Unavailable, Timeout...).
        """
        response: ad_pb.ListModelsResponse = await self._unary(
            self._stub.ListModels, ad_pb.ListModelsRequest(), "", self._attempts(timeout)
        )
        return list(response.models)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    def __repr__(self) -> str:
        return f"AsyncAdGenClient({self.connection!r})"

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
