"""Schema migrations: the ordered plain-SQL files in ``sql/migrations`` applied by yoyo-migrations.

yoyo keeps the applied versions in ``public._yoyo_migration`` and takes a lock, so concurrent
upgrades (two Airflow workers, say) apply each file once. Applying again changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.engine import URL

from clinicflow import db
from clinicflow.errors import ClinicFlowError
from clinicflow.paths import MIGRATIONS_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationStatus:
    applied: list[str]
    pending: list[str]

    @property
    def current(self) -> str | None:
        return self.applied[-1] if self.applied else None


def _yoyo_uri(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _backend_and_migrations(url: URL):
    from yoyo import get_backend, read_migrations

    if not MIGRATIONS_DIR.is_dir():
        raise ClinicFlowError(f"migration folder {MIGRATIONS_DIR} is missing: is the checkout complete?")
    db.ensure_database(url)
    backend = get_backend(_yoyo_uri(url))
    return backend, read_migrations(str(MIGRATIONS_DIR))


def status(url: URL | None = None) -> MigrationStatus:
    url = url or db.url_for("warehouse")
    backend, migrations = _backend_and_migrations(url)
    with backend.lock():
        pending = {m.id for m in backend.to_apply(migrations)}
    ids = [m.id for m in migrations]
    return MigrationStatus(
        applied=[i for i in ids if i not in pending], pending=[i for i in ids if i in pending]
    )


def upgrade(url: URL | None = None) -> list[str]:
    """Apply every pending migration to the warehouse; return the ids applied (empty if none)."""
    url = url or db.url_for("warehouse")
    started = time.perf_counter()
    backend, migrations = _backend_and_migrations(url)
    with backend.lock():
        todo = backend.to_apply(migrations)
        for migration in todo:
            log.info("applying migration %s", migration.id)
        backend.apply_migrations(todo)
    applied = [m.id for m in todo]
    log.info(
        "schema of %s is current (%d migration(s) applied now, %d in all) in %.2fs",
        db.mask(url), len(applied), len(migrations), time.perf_counter() - started,
    )
    return applied
