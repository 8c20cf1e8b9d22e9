"""Where the project's files are, for an editable install or a checkout baked into an image."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
DAGS_DIR = PROJECT_ROOT / "dags"
