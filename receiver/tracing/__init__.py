"""OpenTelemetry tracing: one trace from Rivya's request to every delivery of its event.

    pipeline.py   the SDK's pipeline, as the standard OTEL_* variables ask, or none
    variables.py  those variables, read and checked
    export.py     the batch processor and OTLP/HTTP exporter, counting drops and scrubbing
    carriers.py   W3C trace context kept with a stored event, and read back for its attempts
    http.py       server spans for every request (the ASGI instrumentation), and client
                  spans for Rivya's API (the aiohttp-client instrumentation)

With no OTLP endpoint set, nothing here runs: components are handed no tracer, and skip
every span (the API's no-op spans would still cost a context switch each, on the ingest
path). The README's Tracing section lists every span and attribute.
"""
