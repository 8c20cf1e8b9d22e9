"""Data pipelines: extraction from sources, validation, loading, health checks."""
