"""The core: one pipeline every face calls, and the vocabulary every layer speaks.

The vocabulary (types, errors, collector, cutoff, usage_estimate) sits below everything, so
faces and backends can use it; the pipeline (pipeline, router, gateway, backpressure,
backend_status, service_info) sits above the backends it calls (docs/design.md §2).
"""
