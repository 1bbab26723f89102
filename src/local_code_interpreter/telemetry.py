"""OpenTelemetry, owned by this process: one tracer provider, set up once, whose processors never change.

Why: DevUI's trace capture adds a new span processor to the global tracer provider for every request and only
shuts it down; the SDK cannot remove a processor, so every later span walks every earlier (dead) processor, each
of which logs a warning. The process slowed down and filled its disk with every request served.

What this module does instead:
- One `TracerProvider`, installed before DevUI looks (DevUI then keeps it), with at most three processors added
  once at start: the DevUI trace panel's router (below), and a batch exporter per configured destination —
  OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; http/protobuf) and Azure Monitor
  (`APPLICATIONINSIGHTS_CONNECTION_STRING`).
- Spans are recorded only when someone will read them: an exporter is configured, or the current request is a
  DevUI page run whose trace panel is open for it (`capture`). Otherwise Agent Framework's instrumentation is
  off for that run (it does not build them), and the sampler drops any other span at creation.
- The DevUI trace panel: `capture(...)` replaces DevUI's per-request capture. It sets a context variable to the
  request's collector; the router processor remembers, when a span starts, which collector was current in that
  task's context, and hands the finished span to it. Concurrent requests have separate contexts, so each panel
  gets its own spans and no other request's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

log = logging.getLogger(__name__)

# The DevUI trace collector of the request running in this context (None: nobody reads this request's spans).
_collector: ContextVar[Any] = ContextVar("lci_trace_collector", default=None)


_MAX_OPEN_SPANS = 10000


class _Router(SpanProcessor):
    """Hands each finished span to the collector that was current when it started (never to another's)."""

    def __init__(self) -> None:
        self._owners: dict[int, Any] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        collector = _collector.get()
        if collector is not None and span.context is not None:
            with self._lock:
                self._owners[span.context.span_id] = collector
                if len(self._owners) > _MAX_OPEN_SPANS:  # spans never ended (an abandoned run): forget the oldest
                    del self._owners[next(iter(self._owners))]

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        with self._lock:
            collector = self._owners.pop(span.context.span_id, None)
        if collector is not None:
            collector.export([span])

    def pending(self) -> int:
        return len(self._owners)


class _WhenRead(Sampler):
    """Record a span only if it will be exported or shown in a DevUI trace panel; a child follows its parent."""

    def __init__(self, exporting: bool) -> None:
        self.exporting = exporting

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            sampled = parent.trace_flags.sampled
        else:
            sampled = self.exporting or _collector.get() is not None
        return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "local-code-interpreter: exported or shown in a DevUI trace panel"


class Telemetry:
    """What `setup` installed: the provider, the router, and the names of the exporters."""

    def __init__(self, provider: TracerProvider, router: _Router, exporters: list[str]) -> None:
        self.provider, self.router, self.exporters = provider, router, exporters

    def processor_count(self) -> int:
        return len(self.provider._active_span_processor._span_processors)  # noqa: SLF001 - the figure tests watch

    def shutdown(self) -> None:
        self.provider.shutdown()


_installed: Telemetry | None = None


def exporters_from_env(environ: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    """The span exporters the environment asks for, as (name, exporter)."""
    env = os.environ if environ is None else environ
    found: list[tuple[str, Any]] = []
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        if protocol and protocol != "http/protobuf":
            from .settings import ConfigError

            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: this image exports "
                              "OTLP over http/protobuf (collector port 4318); unset it or set 'http/protobuf'")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        found.append(("otlp", OTLPSpanExporter()))  # reads the OTEL_EXPORTER_OTLP_* variables itself
    if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        found.append(("azure-monitor", AzureMonitorTraceExporter(
            connection_string=env["APPLICATIONINSIGHTS_CONNECTION_STRING"])))
    return found


def setup(service_name: str = "local-code-interpreter", environ: dict[str, str] | None = None) -> Telemetry:
    """Install the process's tracer provider once (idempotent); call before DevUI builds its executor."""
    global _installed
    if _installed is not None:
        return _installed
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from . import __version__

    exporters = exporters_from_env(environ)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, "service.version": __version__}),
                              sampler=_WhenRead(exporting=bool(exporters)))
    router = _Router()
    provider.add_span_processor(router)
    for _, exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        log.warning("another tracer provider was installed first; spans go there, not to this process's exporters")
    _own_agent_framework_setup()
    _instrument_when_read(bool(exporters))
    _installed = Telemetry(provider, router, [name for name, _ in exporters])
    return _installed


def _own_agent_framework_setup() -> None:
    """Agent Framework's `configure_otel_providers` (which DevUI calls) would install a second provider with its
    own exporters when OTEL_EXPORTER_OTLP_ENDPOINT is set: mark it done, since this module did the setup."""
    try:
        from agent_framework.observability import OBSERVABILITY_SETTINGS

        OBSERVABILITY_SETTINGS._executed_setup = True  # noqa: SLF001 - the one switch it offers
    except (ImportError, AttributeError):  # pragma: no cover - older or newer framework
        log.debug("agent_framework observability settings not found")


def _instrument_when_read(exporting: bool) -> None:
    """Agent Framework's instrumentation builds spans and their attributes even when the sampler then drops
    them (measured: about a tenth of the lean path's CPU). Its one switch, `OBSERVABILITY_SETTINGS.ENABLED`,
    now follows the sampler's rule: on when exporting, else only in a run whose DevUI trace panel reads it."""
    try:
        from agent_framework.observability import OBSERVABILITY_SETTINGS
    except ImportError:  # pragma: no cover - older or newer framework
        return
    base = type(OBSERVABILITY_SETTINGS)
    enabled = getattr(base, "ENABLED", None)
    if getattr(base, "_lci_when_read", False) or not isinstance(enabled, property):
        return

    class WhenRead(base):  # type: ignore[misc, valid-type]
        _lci_when_read = True

        @property
        def ENABLED(self) -> bool:  # noqa: N802 - the framework's name
            return enabled.fget(self) and (exporting or _collector.get() is not None)

    OBSERVABILITY_SETTINGS.__class__ = WhenRead


@contextmanager
def capture(response_id: str | None = None, entity_id: str | None = None) -> Iterator[Any]:
    """DevUI's `capture_traces`, routed by request context: the collector gets this run's spans only."""
    from agent_framework_devui._tracing import SimpleTraceCollector

    collector = SimpleTraceCollector(response_id, entity_id)
    token = _collector.set(collector)
    try:
        yield collector
    finally:
        try:
            _collector.reset(token)
        except ValueError:  # closed from another context (a generator finalised elsewhere): that context ends
            pass


def route_devui_traces() -> None:
    """Make DevUI's executor use `capture` instead of adding a span processor per request."""
    import agent_framework_devui._executor as executor

    executor.capture_traces = capture
