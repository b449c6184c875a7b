"""Small helpers with no Relay vocabulary of their own.

Text and JSON checks, stream decoders (NDJSON, SSE), the guarded fetcher for outbound URLs,
byte-bounded stores, metrics and logging set-up.
"""
