"""Relay's logic: translation, routing and backends. Knows nothing of Flask routing."""
