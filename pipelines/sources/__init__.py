"""Appointment sources. Each kind (medialog, fhir, csv) has a connector module in this package."""

from __future__ import annotations

from pathlib import Path

from clinicflow.errors import SourceUnavailableError
from clinicflow.settings import SourceConfig


def probe(source: SourceConfig) -> str:
    """Check that a source can be reached and read; return a one-line description."""
    if source.kind in ("csv", "fhir"):
        path = Path(source.path or "")
        if not path.exists():
            raise SourceUnavailableError(f"{source.name}: {path} does not exist")
        if path.is_file():
            with path.open("rb") as fh:
                fh.read(1)
            return f"{source.kind} file {path} ({path.stat().st_size:,} bytes)"
        files = [p for p in path.iterdir() if p.is_file()]
        return f"{source.kind} folder {path} ({len(files)} file(s))"
    from pipelines.sources import medialog

    return medialog.probe(source)
