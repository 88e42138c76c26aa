"""Measurement: counts, memory, latency and backends, each with its protocol written down."""
