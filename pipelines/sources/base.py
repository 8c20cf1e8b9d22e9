"""The contract between source connectors and the loader.

A connector (Medialog, FHIR, CSV) reads its source and returns an :class:`Extract`: pandas frames
in the canonical columns below. The patient id is still the source's own id in
``patient_source_id``; the loader pseudonymises it (:mod:`pipelines.pseudonym`) before anything is
written to the warehouse, and no other column may hold a name, phone or raw patient id.

The loader then COPYs the frames into ``staging``, validates them with Great Expectations,
quarantines failing rows and upserts the rest into ``core`` in one transaction (see
:mod:`pipelines.ingest` and docs/ingestion.md).

Rules for a connector module ``pipelines/sources/<kind>.py``:

* it exposes ``extract(request: ExtractRequest) -> Extract`` (the module itself is then a
  :class:`Connector`), or ``create_connector(source: SourceConfig) -> Connector``;
* it is read-only towards the source and writes nothing anywhere;
* a source that cannot be reached raises :class:`clinicflow.errors.SourceUnavailableError`; input it
  cannot read at all (a missing column, a wrong encoding) raises
  :class:`clinicflow.errors.DataQualityError` saying what to fix;
* a single row it cannot parse or map is still returned: the fields it could not read are None and
  ``row_problems`` (optional column of ``appointments`` and ``patients``) says what was wrong, with
  the raw value (never a name, phone or raw patient id); the loader quarantines such rows;
* a status it cannot map is never guessed: ``status`` is None, the source's own value stays in
  ``raw_status`` and the code is reported in ``Extract.problems``; the loader quarantines the row;
* appointment times are the clinic's local wall-clock time (naive datetimes); a source that
  stores UTC converts with the source's time zone (``options["timezone"]``, default
  ``request.timezone``);
* outcomes are extracted as the source has them: the loader masks outcomes not yet known at the
  as-of date, so connectors need not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol

from clinicflow.settings import SourceConfig

if TYPE_CHECKING:  # pandas is imported by connectors at run time, not by DAG parsing
    import pandas as pd

#: Canonical appointment statuses, shared by Medialog, FHIR R4 and the N3.Health hub.
STATUSES = (
    "booked", "arrived", "fulfilled", "noshow", "cancelled_by_patient", "cancelled_by_clinic",
    "cancelled_unknown", "rescheduled", "deleted",
)
#: Statuses that say whether the patient came: they do not exist yet for appointments on or after as-of.
OUTCOME_STATUSES = ("arrived", "fulfilled", "noshow")

APPOINTMENT_COLUMNS = (
    "appointment_id",        # text, the source's id
    "patient_source_id",     # text, raw: pseudonymised by the loader, never stored
    "resource_id", "practitioner_id", "department_id", "branch_id", "service_id",  # text
    "start_at",              # datetime64, clinic local time
    "duration_min",          # Int64
    "booked_at",             # datetime64, clinic local time
    "channel",               # text: phone, web, reception, hub, ...
    "confirmed",             # boolean
    "reminder_sent",         # boolean
    "rescheduled_from_id",   # text
    "raw_status",            # dict (or JSON object text): the source's own status fields
    "status",                # one of STATUSES; None for a code the connector cannot map
    "status_changed_at",     # datetime64
    "source_updated_at",     # datetime64 (Medialog KRN_MODIFY_DATE)
)
#: Optional columns a connector may add to ``appointments`` and ``patients``.
OPTIONAL_COLUMNS = ("row_problems",)  # text: what could not be parsed in the row (None if fine)
PATIENT_COLUMNS = ("patient_source_id", "sex", "birth_year", "flags")
BRANCH_COLUMNS = ("branch_id", "name")
DEPARTMENT_COLUMNS = ("department_id", "name", "branch_id")
PRACTITIONER_COLUMNS = ("practitioner_id", "display_name", "specialty", "department_id", "archived")
SERVICE_COLUMNS = ("service_id", "code", "name", "default_duration_min", "no_overbook")
RESOURCE_COLUMNS = (
    "resource_id", "name", "kind", "practitioner_id", "department_id", "branch_id", "no_overbook", "archived",
)
SLOT_COLUMNS = ("resource_id", "start_at", "duration_min", "no_overbook")
RESOURCE_DAY_COLUMNS = ("resource_id", "day", "slots", "slot_minutes", "work_start", "work_end", "on_leave")


@dataclass
class ExtractRequest:
    """What the loader asks of a connector for one run."""

    source: SourceConfig
    as_of: date
    #: Highest source modification time already loaded, per stream (None: first load, read all).
    #: The loader never saves a watermark later than the start of the as-of date, so rows changed on
    #: or after it are read again by the next run.
    watermarks: dict[str, datetime | None] = field(default_factory=dict)
    #: The clinic's IANA time zone (``CLINICFLOW_TIMEZONE``); appointment times are local to it.
    timezone: str = "Europe/Moscow"


@dataclass
class Extract:
    """What a connector returns. ``None`` for an optional frame means "not provided this run"."""

    appointments: pd.DataFrame
    patients: pd.DataFrame
    branches: pd.DataFrame | None = None
    departments: pd.DataFrame | None = None
    practitioners: pd.DataFrame | None = None
    services: pd.DataFrame | None = None
    resources: pd.DataFrame | None = None
    slots: pd.DataFrame | None = None
    resource_days: pd.DataFrame | None = None
    #: True if ``appointments`` holds every appointment of the source (ids missing from it are deleted).
    full_snapshot: bool = False
    #: Every appointment id that exists in the source now with a start date in ``reconcile_window``
    #: (hard-delete reconciliation): appointments of this source in that window that are missing
    #: from it are marked ``deleted``. None: no reconciliation this run.
    existing_ids: pd.Series | None = None
    #: [first day, last day) of start dates that ``existing_ids`` covers.
    reconcile_window: tuple[date, date] | None = None
    #: New watermark per stream, saved only after the load commits.
    watermarks: dict[str, datetime] = field(default_factory=dict)
    #: Things the connector noticed and did not guess about (unknown status codes, ...).
    problems: list[str] = field(default_factory=list)


class Connector(Protocol):
    def extract(self, request: ExtractRequest) -> Extract: ...
