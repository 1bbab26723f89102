"""Spans leave the process only when an exporter is configured: OTLP (http/protobuf) to a collector, here a local
HTTP server that decodes what it receives; Azure Monitor's exporter is built from its connection string."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from local_code_interpreter import telemetry
from local_code_interpreter.settings import ConfigError
from service import clean_env, running_service


class Collector(BaseHTTPRequestHandler):
    spans: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    Collector.spans += [span.name for span in scope.spans]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_are_exported_to_the_configured_otlp_endpoint():
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_port}",
                    OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        with running_service(env=env) as (base, process, _s):
            answer = httpx.post(f"{base}/v1/responses", json={"input": "print(6*7)"}, timeout=30)
            assert answer.status_code == 200
            deadline = time.monotonic() + 20
            while not Collector.spans and time.monotonic() < deadline:
                time.sleep(0.1)
            process.terminate()
            process.wait(10)
            log = process.stdout.read()
    finally:
        collector.shutdown()
    print(f"\nexported spans: {sorted(set(Collector.spans))}")
    seen = f"spans {sorted(set(Collector.spans))}; the server's log ends:\n{log[-3000:]}"  # if it fails: why
    assert any("execute_code" in name for name in Collector.spans), seen
    assert any(name.startswith("invoke_agent") for name in Collector.spans), seen
    assert "Traceback" not in log and "WARNING opentelemetry" not in log, seen


def test_exporters_from_environment():
    assert telemetry.exporters_from_env({}) == []
    found = telemetry.exporters_from_env({"APPLICATIONINSIGHTS_CONNECTION_STRING":
                                          "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                          "IngestionEndpoint=http://127.0.0.1:9/"})
    assert [name for name, _ in found] == ["azure-monitor"]
    with pytest.raises(ConfigError, match="http/protobuf"):
        telemetry.exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                                      "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
