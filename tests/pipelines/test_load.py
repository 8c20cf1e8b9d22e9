"""Loading into core: idempotent re-runs, changes only where the source changed, as-of masking,
reconciliation, and a failure injected mid-load that leaves the previous state intact."""

from __future__ import annotations

import secrets
from datetime import date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from clinicflow.errors import DataQualityError
from pipelines import ingest, load
from pipelines.sources.base import Extract
from tests.pipelines.ingest_data import core_snapshot, source_json, vitoria_rows, write_vitoria

AS_OF = date(2016, 5, 9)


@pytest.fixture()
def vitoria(tmp_path, settings_env, migrated_warehouse):
    name = f"vit_{secrets.token_hex(3)}"
    path = write_vitoria(tmp_path / "v.csv", vitoria_rows(40))
    settings_env(sources=source_json(name, "csv", path, "vitoria"))
    return name, path


def test_rerunning_a_load_changes_nothing(vitoria, migrated_warehouse):
    name, _ = vitoria
    first = ingest.ingest(name, AS_OF)
    assert first["core"]["appointment"] == {"inserted": 40, "updated": 0}
    before = core_snapshot(migrated_warehouse, name)
    for _ in range(2):
        again = ingest.ingest(name, AS_OF)
        assert again["core"]["appointment"] == {"inserted": 0, "updated": 0}
        assert all(v == {"inserted": 0, "updated": 0} for k, v in again["core"].items() if k != "deleted")
    assert core_snapshot(migrated_warehouse, name) == before  # updated_at and load_batch_id included
    with migrated_warehouse.connect() as conn:
        left = conn.execute(sa.text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging' AND tablename ~ '_b[0-9]+$' "
            "AND substring(tablename from '_b([0-9]+)$')::bigint = ANY(:ids)"), {"ids": [first["batch_id"]]}).scalar()
    assert left == 0, "staging partitions of a loaded batch are dropped"


def test_as_of_masks_outcomes_and_a_later_run_reveals_them(vitoria, migrated_warehouse):
    name, _ = vitoria
    ingest.ingest(name, AS_OF)
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT start_at, status, raw_status FROM core.appointment WHERE source = :s"), {"s": name}).all()
    later = [r for r in rows if r.start_at >= datetime(2016, 5, 9)]
    assert later and all(r.status == "booked" and r.raw_status == {"masked": True} for r in later)
    assert {r.status for r in rows if r.start_at < datetime(2016, 5, 9)} == {"noshow", "fulfilled"}
    summary = ingest.ingest(name, date(2016, 5, 12))
    revealed = sum(1 for r in later if r.start_at < datetime(2016, 5, 12))
    assert summary["core"]["appointment"]["updated"] == revealed
    with migrated_warehouse.connect() as conn:
        masked = conn.execute(sa.text(
            "SELECT count(*) FROM core.appointment WHERE source = :s AND raw_status = '{\"masked\": true}'"),
            {"s": name}).scalar()
    assert masked == len(later) - revealed


def test_a_changed_source_updates_only_what_changed(vitoria, migrated_warehouse):
    name, path = vitoria
    first = ingest.ingest(name, AS_OF)
    rows = vitoria_rows(40)
    rows[1]["No-show"] = "Yes" if rows[1]["No-show"] == "No" else "No"  # an outcome corrected at the source
    removed = rows.pop(5)                                                  # hard-deleted in the source
    rows.append(dict(rows[0], AppointmentID="5699999"))                    # a new booking
    write_vitoria(path, rows)
    second = ingest.ingest(name, AS_OF)
    assert second["core"]["appointment"] == {"inserted": 1, "updated": 1}
    assert second["core"]["deleted"] == 1
    with migrated_warehouse.connect() as conn:
        batches = dict(conn.execute(sa.text(
            "SELECT appointment_id, load_batch_id FROM core.appointment WHERE source = :s"), {"s": name}).all())
        status = conn.execute(sa.text("SELECT status FROM core.appointment WHERE source = :s AND appointment_id = :a"),
                              {"s": name, "a": removed["AppointmentID"]}).scalar()
    assert status == "deleted"
    changed = {rows[1]["AppointmentID"], "5699999", removed["AppointmentID"]}
    assert {a for a, b in batches.items() if b == second["batch_id"]} == changed
    assert {b for a, b in batches.items() if a not in changed} == {first["batch_id"]}


def test_failure_mid_load_leaves_previous_state_and_next_run_completes(vitoria, migrated_warehouse, monkeypatch):
    name, path = vitoria
    ingest.ingest(name, AS_OF)
    before = core_snapshot(migrated_warehouse, name)
    rows = vitoria_rows(40)
    for row in rows[:10]:
        row["Age"] = str(int(row["Age"]) + 1)  # patients change
        row["SMS_received"] = "1"               # appointments change
    write_vitoria(path, rows)

    def explode(step: str) -> None:
        if step == "appointment":  # after patients and appointments were upserted, inside the transaction
            raise RuntimeError("injected failure after the appointment upsert")

    monkeypatch.setattr(load, "step_hook", explode)
    with pytest.raises(RuntimeError, match="injected failure"):
        ingest.ingest(name, AS_OF)
    assert core_snapshot(migrated_warehouse, name) == before
    with migrated_warehouse.connect() as conn:
        failed = conn.execute(sa.text(
            "SELECT status, message, details->>'failed_stage' FROM ops.load_batch WHERE source = :s "
            "ORDER BY load_batch_id DESC LIMIT 1"), {"s": name}).one()
    assert failed[0] == "failed" and "injected failure" in failed[1] and failed[2] == "load"

    monkeypatch.setattr(load, "step_hook", None)
    done = ingest.ingest(name, AS_OF)
    assert done["core"]["appointment"]["updated"] == sum(r["SMS_received"] == "0" for r in vitoria_rows(40)[:10])
    assert done["core"]["patient"]["updated"] > 0
    reference = core_snapshot(migrated_warehouse, name)
    assert ingest.ingest(name, AS_OF)["core"]["appointment"] == {"inserted": 0, "updated": 0}
    assert core_snapshot(migrated_warehouse, name) == reference


def test_a_failing_trigger_rolls_back_the_whole_load(vitoria, migrated_warehouse):
    """A real database error in the middle of the transaction (a trigger on core.appointment)."""
    name, path = vitoria
    ingest.ingest(name, AS_OF)
    before = core_snapshot(migrated_warehouse, name)
    rows = vitoria_rows(40)
    new_sex = "M" if rows[0]["Gender"] == "F" else "F"
    for row in rows:  # a patient change, upserted before the appointments
        if row["PatientId"] == rows[0]["PatientId"]:
            row["Gender"] = new_sex
    rows[0]["SMS_received"] = "1" if rows[0]["SMS_received"] == "0" else "0"
    write_vitoria(path, rows)
    function = f"fail_{name}"
    with migrated_warehouse.begin() as conn:
        conn.execute(sa.text(
            f"CREATE FUNCTION ops.{function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.source = '{name}' THEN RAISE EXCEPTION 'trigger says no'; END IF; RETURN NEW; END $$"))
        conn.execute(sa.text(f"CREATE TRIGGER {function} BEFORE UPDATE ON core.appointment "
                             f"FOR EACH ROW EXECUTE FUNCTION ops.{function}()"))
    try:
        with pytest.raises(Exception, match="trigger says no"):
            ingest.ingest(name, AS_OF)
        assert core_snapshot(migrated_warehouse, name) == before
    finally:
        with migrated_warehouse.begin() as conn:
            conn.execute(sa.text(f"DROP TRIGGER {function} ON core.appointment"))
            conn.execute(sa.text(f"DROP FUNCTION ops.{function}()"))
    done = ingest.ingest(name, AS_OF)
    assert done["core"]["patient"]["updated"] == 1 and done["core"]["appointment"]["updated"] == 1


class _FrameSource:
    """A source given as canonical frames (stands for a connector's output in these tests)."""

    def __init__(self, extract: Extract) -> None:
        self.result = extract

    def extract(self, request):
        self.request = request
        return self.result


def _frames(ids: list[str], start: str = "2026-11-02 09:00") -> Extract:
    n = len(ids)
    appointments = pd.DataFrame({
        "appointment_id": ids, "patient_source_id": ["p1"] * n, "resource_id": ["r1"] * n, "practitioner_id": None,
        "department_id": None, "branch_id": None, "service_id": None,
        "start_at": pd.date_range(start, periods=n, freq="1D"), "duration_min": [20] * n,
        "booked_at": pd.Timestamp("2026-10-01"), "channel": "web", "confirmed": True, "reminder_sent": False,
        "rescheduled_from_id": None, "raw_status": [{"STATUS": 0}] * n, "status": ["booked"] * n,
        "status_changed_at": pd.NaT, "source_updated_at": pd.Timestamp("2026-10-01"),
    })
    patients = pd.DataFrame({"patient_source_id": ["p1"], "sex": ["F"], "birth_year": [1980], "flags": [{}]})
    resources = pd.DataFrame({"resource_id": ["r1"], "name": ["Dr"], "kind": ["practitioner"], "practitioner_id": None,
                              "department_id": None, "branch_id": None, "no_overbook": False, "archived": False})
    return Extract(appointments=appointments, patients=patients, resources=resources)


def test_watermarks_are_saved_with_the_load_and_capped_at_as_of(settings_env, migrated_warehouse, monkeypatch,
                                                                tmp_path):
    name = f"wm_{secrets.token_hex(3)}"
    settings_env(sources=source_json(name, "fhir", tmp_path))
    extract = _frames(["a1", "a2", "a3"])
    extract.watermarks = {"PLANNING": datetime(2026, 11, 1, 23, 0), "MOTCONSU": datetime(2026, 10, 30, 8, 0)}
    extract.existing_ids = pd.Series(["a1", "a2", "a3"])
    extract.reconcile_window = (date(2026, 11, 1), date(2026, 11, 30))
    fake = _FrameSource(extract)
    monkeypatch.setattr(ingest, "connector_for", lambda source: fake)
    ingest.ingest(name, date(2026, 11, 1))
    assert fake.request.watermarks == {}
    assert ingest.read_watermarks(name) == {"PLANNING": datetime(2026, 11, 1), "MOTCONSU": datetime(2026, 10, 30, 8)}

    # the next run: a2 was hard-deleted in the source; the watermark goes forward only with the load
    extract2 = _frames(["a1"])
    extract2.existing_ids = pd.Series(["a1", "a3"])
    extract2.reconcile_window = (date(2026, 11, 1), date(2026, 11, 30))
    extract2.watermarks = {"PLANNING": datetime(2026, 11, 2, 6, 0)}
    fake.result = extract2
    monkeypatch.setattr(load, "step_hook", lambda step: (_ for _ in ()).throw(RuntimeError("boom"))
                        if step == "watermarks" else None)
    with pytest.raises(RuntimeError):
        ingest.ingest(name, date(2026, 11, 3))
    assert ingest.read_watermarks(name)["PLANNING"] == datetime(2026, 11, 1)
    monkeypatch.setattr(load, "step_hook", None)
    summary = ingest.ingest(name, date(2026, 11, 3))
    assert fake.request.watermarks["PLANNING"] == datetime(2026, 11, 1)
    assert summary["core"]["deleted"] == 1
    assert ingest.read_watermarks(name)["PLANNING"] == datetime(2026, 11, 2, 6, 0)
    with migrated_warehouse.connect() as conn:
        statuses = dict(conn.execute(sa.text(
            "SELECT appointment_id, status FROM core.appointment WHERE source = :s"), {"s": name}).all())
    assert statuses == {"a1": "booked", "a2": "deleted", "a3": "booked"}


def _capacity(days: dict[str, int], slot_days: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resource days of r1 with their slot counts, and the 09:00.. slots of ``slot_days``."""
    resource_days = pd.DataFrame({
        "resource_id": "r1", "day": pd.to_datetime(list(days)).date, "slots": list(days.values()),
        "slot_minutes": 20, "work_start": "09:00", "work_end": "12:00", "on_leave": [n == 0 for n in days.values()],
    })
    starts = [pd.Timestamp(f"{day} 09:00") + pd.Timedelta(minutes=20 * i) for day in slot_days
              for i in range(days[day])]
    slots = pd.DataFrame({"resource_id": "r1", "start_at": starts, "duration_min": 20, "no_overbook": False})
    return slots, resource_days


def test_a_day_that_loses_all_its_slots_loses_them_in_core(settings_env, migrated_warehouse, monkeypatch, tmp_path):
    """Leave entered after the slots were loaded: the resource day says 0 slots and the source sends
    none for it, so core keeps none. A day outside the batch's slot window keeps its slots."""
    name = f"leave_{secrets.token_hex(3)}"
    settings_env(sources=source_json(name, "fhir", tmp_path))
    extract = _frames(["a1"])
    extract.slots, extract.resource_days = _capacity(
        {"2026-10-30": 2, "2026-11-02": 3, "2026-11-03": 3}, ["2026-10-30", "2026-11-02", "2026-11-03"])
    fake = _FrameSource(extract)
    monkeypatch.setattr(ingest, "connector_for", lambda source: fake)
    ingest.ingest(name, date(2026, 11, 1))

    later = _frames(["a1"])  # the next night: the slot window starts on 2 November, the 3rd is now leave
    later.slots, later.resource_days = _capacity(
        {"2026-10-30": 2, "2026-11-02": 3, "2026-11-03": 0}, ["2026-11-02"])
    fake.result = later
    summary = ingest.ingest(name, date(2026, 11, 2))
    assert summary["core"]["slot"]["removed"] == 3
    with migrated_warehouse.connect() as conn:
        per_day = dict(conn.execute(sa.text(
            "SELECT start_at::date, count(*) FROM core.slot WHERE source = :s GROUP BY 1"), {"s": name}).all())
        leave = conn.execute(sa.text("SELECT slots, on_leave FROM core.resource_day WHERE source = :s "
                                     "AND day = '2026-11-03'"), {"s": name}).one()
    assert per_day == {date(2026, 10, 30): 2, date(2026, 11, 2): 3}
    assert tuple(leave) == (0, True)


def test_prepare_enforces_the_contract():
    extract = _frames(["a1"])
    kwargs = {"source": "s", "as_of": date(2026, 11, 1), "secret": b"k" * 16, "zone": "Europe/Moscow"}
    prepared = load.prepare(extract, **kwargs)
    staged = prepared.frames["appointment"]
    assert "patient_source_id" not in staged.columns
    assert staged.loc[0, "patient_key"] == load.pseudonymise(pd.Series(["p1"]), b"k" * 16, "s")[0] != "p1"
    with pytest.raises(DataQualityError, match=r"unexpected column\(s\) \['patient_name'\]"):
        load.prepare(Extract(appointments=extract.appointments.assign(patient_name="X"),
                             patients=extract.patients), **kwargs)
    with pytest.raises(DataQualityError, match=r"missing column\(s\) \['status'\]"):
        load.prepare(Extract(appointments=extract.appointments.drop(columns="status"),
                             patients=extract.patients), **kwargs)
    with pytest.raises(DataQualityError, match=r"appointments\.duration_min: not a number: 'twenty'"):
        load.prepare(Extract(appointments=extract.appointments.assign(duration_min="twenty"),
                             patients=extract.patients), **kwargs)


def test_prepare_masks_a_copy_and_leaves_the_extract_alone():
    """The staged frames may share arrays with the connector's (no copies of a million rows), so masking
    replaces whole columns: the extract is unchanged, the staged rows are masked."""
    extract = _frames(["a1", "a2"], start="2026-10-31 09:00")
    extract.appointments["status"] = ["noshow", "fulfilled"]   # the second one is after the as-of date
    extract.appointments["raw_status"] = ['{"STATUS": 3}', '{"STATUS": 4}']
    before = extract.appointments.copy(deep=True)
    prepared = load.prepare(extract, source="s", as_of=date(2026, 11, 1), secret=b"k" * 16, zone="Europe/Moscow")
    staged = prepared.frames["appointment"]
    assert extract.appointments.equals(before)
    assert prepared.masked == 1
    assert staged["status"].tolist() == ["noshow", "booked"]
    assert staged["raw_status"].tolist() == ['{"STATUS": 3}', load.MASKED_RAW_STATUS]
    assert staged["outcome_masked"].tolist() == [False, True]


def test_mask_as_of_rules():
    frame = pd.DataFrame({
        "start_at": pd.to_datetime(["2026-11-01 09:00", "2026-10-31 09:00", "2026-10-20 09:00", "2026-11-05 00:00"]),
        "status": ["noshow", "fulfilled", "cancelled_by_patient", "cancelled_by_clinic"],
        "status_changed_at": pd.to_datetime([None, "2026-10-31 10:00", "2026-11-01 08:00", "2026-10-29 00:00"]),
        "raw_status": ['{"a":1}'] * 4,
    })
    assert load.mask_as_of(frame, date(2026, 11, 1)) == 2
    assert frame["status"].tolist() == ["booked", "fulfilled", "booked", "cancelled_by_clinic"]
    assert frame["outcome_masked"].tolist() == [True, False, True, False]
    assert frame.loc[0, "raw_status"] == load.MASKED_RAW_STATUS


def test_capped_watermarks():
    capped = load.capped_watermarks({"a": datetime(2026, 11, 3, 5), "b": datetime(2026, 10, 1), "c": None},
                                    date(2026, 11, 2))
    assert capped == {"a": datetime(2026, 11, 2), "b": datetime(2026, 10, 1)}


def test_bulk_pseudonymisation_equals_patient_key():
    from pipelines import pseudonym

    ids = pd.Series([12345, " 12345 ", "9377952927E-5", None, "", "Ж-1"], dtype=object)
    cache: dict[str, str] = {}
    keys = load.pseudonymise(ids, b"s" * 16, "main", cache)
    expected = [pseudonym.patient_key(b"s" * 16, "main", v) for v in [12345, "12345", "9377952927E-5", None, None,
                                                                        "Ж-1"]]
    assert [None if pd.isna(k) else k for k in keys] == expected
    assert isinstance(keys.dtype, pd.CategoricalDtype) and len(keys.cat.categories) == 3  # each key stored once
    assert len(cache) == 3
    # ids read from SQL with NULLs arrive as floats: 7.0 is patient "7"
    floats = load.pseudonymise(pd.Series([7.0, None]), b"s" * 16, "main", cache)
    assert [None if pd.isna(k) else k for k in floats] == [pseudonym.patient_key(b"s" * 16, "main", 7), None]
    assert load.pseudonymise(pd.Series(["12345"]), b"s" * 16, "other")[0] != expected[0]


def test_an_empty_incremental_extract_loads_nothing(settings_env, migrated_warehouse, monkeypatch, tmp_path):
    name = f"empty_{secrets.token_hex(3)}"
    settings_env(sources=source_json(name, "fhir", tmp_path))
    first = _frames(["a1", "a2"])
    fake = _FrameSource(first)
    monkeypatch.setattr(ingest, "connector_for", lambda source: fake)
    ingest.ingest(name, date(2026, 11, 1))
    before = core_snapshot(migrated_warehouse, name)
    fake.result = Extract(appointments=first.appointments.iloc[0:0], patients=first.patients.iloc[0:0],
                          watermarks={"PLANNING": datetime(2026, 10, 31, 12)})
    summary = ingest.ingest(name, date(2026, 11, 2))
    assert summary["staged"] == {"patient": 0, "appointment": 0}
    assert summary["core"]["appointment"] == {"inserted": 0, "updated": 0}
    after = core_snapshot(migrated_warehouse, name)
    assert after["appointment"] == before["appointment"]
    assert ingest.read_watermarks(name) == {"PLANNING": datetime(2026, 10, 31, 12)}


def test_copy_in_chunks_numbers_rows_once(vitoria, migrated_warehouse, monkeypatch):
    name, _ = vitoria
    monkeypatch.setattr(load, "COPY_CHUNK_ROWS", 7)
    staged = ingest.stage_source(name, AS_OF)
    with migrated_warehouse.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT row_no, appointment_id FROM {load.staging_table('appointment', staged['batch_id'])} "
            "ORDER BY row_no")).all()
    assert [r.row_no for r in rows] == list(range(1, 41))
    assert [r.appointment_id for r in rows] == [r["AppointmentID"] for r in vitoria_rows(40)]
    ingest.validate_batch(staged["batch_id"])
    assert ingest.load_batch(staged["batch_id"])["core"]["appointment"]["inserted"] == 40


# --------------------------------------------------------------------------------------------------
# write paths: insert, bulk (index rebuild), merge (joins), upsert (ON CONFLICT) give the same core

CORE_TABLES = ("branch", "department", "practitioner", "service", "resource", "patient", "appointment", "slot",
               "resource_day")

#: How each strategy chooses the path of every entity (rows, source rows in core, table rows).
STRATEGIES = {
    "auto": None,  # the thresholds: tiny batches insert first, then merge
    "upsert": lambda rows, source_rows, table_rows: load.LoadPath(first=False),
    "merge": lambda rows, source_rows, table_rows: load.LoadPath(first=source_rows == 0, merge=source_rows > 0),
    "bulk": lambda rows, source_rows, table_rows: load.LoadPath(first=source_rows == 0, merge=source_rows > 0,
                                                                rebuild=True),
}


def _normalised(engine: sa.Engine, source: str) -> dict[str, list[tuple]]:
    """Every core row of a source without updated_at, with load_batch_id as the batch's ordinal."""
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        batches = conn.execute(sa.text("SELECT load_batch_id FROM ops.load_batch WHERE source = :s AND "
                                       "status = 'loaded' ORDER BY 1"), {"s": source}).scalars().all()
        ordinal = {b: i for i, b in enumerate(batches)}
        for table in CORE_TABLES:
            columns = [c for c in conn.execute(sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'core' "
                "AND table_name = :t ORDER BY ordinal_position"), {"t": table}).scalars() if c != "updated_at"]
            rows = conn.execute(sa.text(f"SELECT {', '.join(columns)} FROM core.{table} WHERE source = :s"),
                                {"s": source}).mappings().all()
            out[table] = sorted(tuple(ordinal.get(v, v) if k == "load_batch_id" else v for k, v in row.items())
                                for row in (dict(r) for r in rows))
        out["watermark"] = [tuple(r) for r in conn.execute(sa.text(
            "SELECT stream, value FROM ops.watermark WHERE source = :s ORDER BY 1"), {"s": source})]
    return out


def _forget(engine: sa.Engine, source: str) -> None:
    with engine.begin() as conn:
        for table in CORE_TABLES:
            conn.execute(sa.text(f"DELETE FROM core.{table} WHERE source = :s"), {"s": source})
        conn.execute(sa.text("DELETE FROM ops.watermark WHERE source = :s"), {"s": source})
        conn.execute(sa.text("DELETE FROM ops.load_batch WHERE source = :s"), {"s": source})


def _indexes(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT c.relname, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisprimary, "
            "obj_description(i.indexrelid, 'pg_class') FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'core' ORDER BY 1, 2"))]


def _replay(engine, monkeypatch, name: str, strategy: str, steps) -> list[tuple[dict, dict, dict]]:
    """Load ``steps`` (callables that write the source, each with its as-of date) with one strategy;
    return per step the counts, the paths and the normalised core."""
    _forget(engine, name)
    choose = STRATEGIES[strategy]
    monkeypatch.setattr(load, "choose_path", choose or _AUTO_CHOOSE)
    out = []
    for write, as_of in steps:
        write()
        summary = ingest.ingest(name, as_of)
        loaded = ingest._batch(summary["batch_id"])["details"]["load"]
        out.append((summary["core"], loaded["paths"], _normalised(engine, name)))
    return out


_AUTO_CHOOSE = load.choose_path


def _vitoria_steps(path):
    first = vitoria_rows(40)[:30]
    second = vitoria_rows(40)
    second[1]["No-show"] = "Yes" if second[1]["No-show"] == "No" else "No"  # an outcome corrected
    patient, sex = second[2]["PatientId"], "M" if second[2]["Gender"] == "F" else "F"
    for row in second:                                                       # a patient changed
        if row["PatientId"] == patient:
            row["Gender"] = sex
    del second[7]                                                            # hard-deleted in the source
    return [(lambda: write_vitoria(path, first), date(2016, 5, 9)),
            (lambda: write_vitoria(path, second), date(2016, 5, 12)),   # outcomes revealed, 10 new rows
            (lambda: write_vitoria(path, second), date(2016, 5, 12))]   # nothing changed


def test_every_write_path_gives_the_same_core(tmp_path, settings_env, migrated_warehouse, monkeypatch):
    """The bulk first load (indexes dropped and built again), the plain insert, the join merge and the
    ON CONFLICT upsert leave identical core tables and report identical counts, step by step; the
    bulk path leaves every index of core exactly as it was."""
    name = f"paths_{secrets.token_hex(3)}"
    path = tmp_path / "v.csv"
    settings_env(sources=source_json(name, "csv", path, "vitoria"))
    steps = _vitoria_steps(path)
    indexes = _indexes(migrated_warehouse)
    results = {strategy: _replay(migrated_warehouse, monkeypatch, name, strategy, steps) for strategy in STRATEGIES}
    assert _indexes(migrated_warehouse) == indexes
    reference = results["upsert"]
    assert reference[0][0]["appointment"] == {"inserted": 30, "updated": 0}
    assert reference[1][0]["appointment"]["inserted"] == 10 and reference[1][0]["deleted"] == 1
    assert reference[1][0]["appointment"]["updated"] > 1 and reference[1][0]["patient"]["updated"] > 0
    assert all(v == {"inserted": 0, "updated": 0} for k, v in reference[2][0].items() if k != "deleted")
    for strategy, steps_out in results.items():
        for step, ((counts, _paths, core), (ref_counts, _, ref_core)) in enumerate(zip(steps_out, reference,
                                                                                       strict=True)):
            assert counts == ref_counts, (strategy, step)
            assert core == ref_core, (strategy, step)
    assert set(results["bulk"][0][1].values()) == {"bulk"}
    assert results["bulk"][1][1]["appointment"] == "bulk+merge"
    assert set(results["auto"][0][1].values()) == {"insert"} and set(results["auto"][1][1].values()) == {"merge"}
    assert set(results["upsert"][1][1].values()) == {"upsert"}


def test_write_paths_agree_on_slots_and_deletions(tmp_path, settings_env, migrated_warehouse, monkeypatch):
    """A FHIR export (slots, schedules, practitioners) whose second version drops an appointment and a
    slot and changes a status: bulk and upsert paths give the same core."""
    from tests.pipelines.ingest_data import fhir_bundle, write_json

    name = f"slots_{secrets.token_hex(3)}"
    path = tmp_path / "b.json"
    settings_env(sources=source_json(name, "fhir", path))
    first = fhir_bundle(["booked", "fulfilled", "booked", "cancelled", "arrived"], day=date(2026, 10, 30))
    second = fhir_bundle(["booked", "noshow", "booked", "cancelled"], day=date(2026, 10, 30))
    steps = [(lambda: write_json(path, first), date(2026, 11, 1)), (lambda: write_json(path, second),
                                                                     date(2026, 11, 1))]
    bulk = _replay(migrated_warehouse, monkeypatch, name, "bulk", steps)
    upsert = _replay(migrated_warehouse, monkeypatch, name, "upsert", steps)
    assert [(c, n) for c, _, n in bulk] == [(c, n) for c, _, n in upsert]
    assert bulk[1][0]["slot"]["removed"] == 1 and bulk[1][0]["deleted"] == 1
    assert bulk[1][0]["appointment"]["updated"] == 1


def test_choose_path():
    big = load.BULK_MIN_ROWS
    assert load.choose_path(10, 0, 10_000).name == "insert"
    assert load.choose_path(big, 0, 0).name == "bulk"
    assert load.choose_path(big, 0, int(big * load.BULK_MAX_TABLE_RATIO)).name == "bulk"
    assert load.choose_path(big, 0, int(big * load.BULK_MAX_TABLE_RATIO) + 1).name == "insert"
    assert load.choose_path(big, 100, 100).name == "bulk+merge"
    assert load.choose_path(100, 400, 10**6).name == "merge"        # a re-read of (most of) the source
    assert load.choose_path(100, 100_000, 10**6).name == "upsert"   # a small nightly increment


def test_bulk_path_does_not_wait_for_a_busy_table(vitoria, migrated_warehouse, monkeypatch):
    """A reader holding core.appointment: the bulk path gives up its exclusive lock after
    BULK_LOCK_TIMEOUT and loads with the indexes in place; nothing else changes."""
    name, _ = vitoria
    monkeypatch.setattr(load, "choose_path", STRATEGIES["bulk"])
    monkeypatch.setattr(load, "BULK_LOCK_TIMEOUT", "200ms")
    reader = migrated_warehouse.connect()
    try:
        reader.execute(sa.text("SELECT count(*) FROM core.appointment"))  # ACCESS SHARE until the rollback
        summary = ingest.ingest(name, AS_OF)
    finally:
        reader.rollback()
        reader.close()
    paths = ingest._batch(summary["batch_id"])["details"]["load"]["paths"]
    assert paths["appointment"] == "insert" and paths["patient"] == "bulk"
    assert summary["core"]["appointment"] == {"inserted": 40, "updated": 0}


def test_failure_during_a_bulk_load_restores_the_indexes(vitoria, migrated_warehouse, monkeypatch):
    name, _ = vitoria
    indexes = _indexes(migrated_warehouse)
    monkeypatch.setattr(load, "choose_path", STRATEGIES["bulk"])

    def explode(step: str) -> None:
        if step == "appointment":  # indexes of patient and appointment were dropped and built again
            raise RuntimeError("injected failure after the bulk appointment insert")

    monkeypatch.setattr(load, "step_hook", explode)
    with pytest.raises(RuntimeError, match="injected failure"):
        ingest.ingest(name, AS_OF)
    assert _indexes(migrated_warehouse) == indexes
    assert _normalised(migrated_warehouse, name)["appointment"] == []
    monkeypatch.setattr(load, "step_hook", None)
    assert ingest.ingest(name, AS_OF)["core"]["appointment"] == {"inserted": 40, "updated": 0}
    assert _indexes(migrated_warehouse) == indexes
