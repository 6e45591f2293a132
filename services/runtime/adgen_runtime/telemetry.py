"""What a server reports about itself: its Prometheus registry and, when an OTLP endpoint is set, its traces.

A `Telemetry` is made once per server and handed to the pieces that report (the interceptors, the engines,
the downstream channels); nothing here is process-global, so tests give each service its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.context import Context as TraceContext
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from adgen_runtime.logs import REQUEST_ID_SPAN_ATTRIBUTE, current_request_id
from adgen_runtime.settings import ServerSettings


class RequestIdSpanProcessor(SpanProcessor):
    """Puts the current call's request id on every span started inside it (downstream calls, LLM requests)."""

    def on_start(self, span: Span, parent_context: TraceContext | None = None) -> None:
        request_id = current_request_id()
        if request_id != "-":
            span.set_attribute(REQUEST_ID_SPAN_ATTRIBUTE, request_id)

    def on_end(self, span: ReadableSpan) -> None:
        return None


def tracer_provider(service_name: str, *processors: SpanProcessor) -> TracerProvider:
    """A provider that names the service and tags request ids, exporting through `processors`."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(RequestIdSpanProcessor())
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


@dataclass
class Telemetry:
    """One server's metrics registry and tracer provider (None: tracing off)."""

    service_name: str
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    tracing: TracerProvider | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings, service_name: str) -> Telemetry:
        """Tracing on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the exporter reads the other OTEL_* variables."""
        if not settings.otlp_endpoint:
            return cls(service_name)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        return cls(service_name, tracing=tracer_provider(service_name, BatchSpanProcessor(exporter)))

    def shutdown(self) -> None:
        """Flushes and stops the span exporters."""
        if self.tracing is not None:
            self.tracing.shutdown()
