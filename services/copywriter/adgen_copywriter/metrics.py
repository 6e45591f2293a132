"""The copywriter's Prometheus metrics: language-model latency, tokens and retries, by endpoint and model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

LLM_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class LlmMetrics:
    """`backend` is the endpoint's host (api.openai.com, a local vLLM); `model` the model asked for."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "adgen_llm_request_duration_seconds",
            "One chat completion, the SDK's own retries included, by how it ended.",
            ("backend", "model", "outcome"),
            buckets=LLM_BUCKETS_S,
            registry=registry,
        )
        self.tokens = Counter(
            "adgen_llm_tokens",
            "Tokens the endpoint reported, by kind (prompt, completion).",
            ("backend", "model", "kind"),
            registry=registry,
        )
        self.retries = Counter(
            "adgen_llm_retries",
            "Repeated requests: `http` (the SDK retried a failed request), `output` (unusable JSON asked again),"
            " `rules` (copy that broke a rule asked again).",
            ("backend", "model", "kind"),
            registry=registry,
        )
