"""The ingest stages end to end: an unreachable source, a FHIR export with an unknown status, the proof
that no name, phone or raw patient id reaches the warehouse, and the command line."""

from __future__ import annotations

import json
import secrets
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from clinicflow.cli import main
from clinicflow.errors import SourceUnavailableError
from clinicflow.settings import get_settings
from pipelines import ingest
from tests.pipelines.ingest_data import PATIENT_NAMES, fhir_bundle, source_json, vitoria_rows, write_json, write_vitoria

AS_OF = date(2026, 11, 1)


def _count(engine, sql, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def test_unreachable_source_writes_nothing_and_the_next_run_catches_up(tmp_path, settings_env, migrated_warehouse):
    name = f"gone_{secrets.token_hex(3)}"
    path = tmp_path / "export.csv"
    settings_env(sources=source_json(name, "csv", path, "vitoria"))
    partitions = _count(migrated_warehouse, "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'")
    with pytest.raises(SourceUnavailableError, match="does not exist"):
        ingest.stage_source(name, AS_OF)
    assert _count(migrated_warehouse, "SELECT count(*) FROM pg_tables WHERE schemaname = 'staging'") == partitions
    assert _count(migrated_warehouse, "SELECT count(*) FROM core.appointment WHERE source = :s", s=name) == 0
    assert _count(migrated_warehouse, "SELECT count(*) FROM ops.watermark WHERE source = :s", s=name) == 0
    with migrated_warehouse.connect() as conn:
        attempt = conn.execute(sa.text("SELECT status, message FROM ops.load_batch WHERE source = :s"),
                               {"s": name}).one()
    assert attempt.status == "failed" and "does not exist" in attempt.message
    write_vitoria(path, vitoria_rows(12))
    summary = ingest.ingest(name, date(2016, 5, 20))
    assert summary["core"]["appointment"]["inserted"] == 12


def test_fhir_export_with_an_unknown_status(tmp_path, settings_env, migrated_warehouse):
    name = f"fhir_{secrets.token_hex(3)}"
    bundle = fhir_bundle(["booked", "fulfilled", "on-hold", "cancelled"], day=date(2026, 10, 30))
    settings_env(sources=source_json(name, "fhir", write_json(tmp_path / "b.json", bundle)))
    summary = ingest.ingest(name, AS_OF)
    assert summary["quarantined"]["appointment"] == 1
    assert summary["problems"] == 1
    with migrated_warehouse.connect() as conn:
        q = conn.execute(sa.text(
            "SELECT record_id, failed_expectations, record FROM quarantine.record WHERE source = :s"),
            {"s": name}).one()
        statuses = dict(conn.execute(sa.text(
            "SELECT appointment_id, status FROM core.appointment WHERE source = :s"), {"s": name}).all())
        slots = conn.execute(sa.text("SELECT count(*) FROM core.slot WHERE source = :s"), {"s": name}).scalar()
        problems = conn.execute(sa.text("SELECT details->'problems' FROM ops.load_batch WHERE source = :s"),
                                {"s": name}).scalar()
    assert q.record_id == "appt-2" and q.failed_expectations == ["status_known"]
    assert q.record["raw_status"] == {"status": "on-hold"}
    assert statuses == {"appt-0": "booked", "appt-1": "fulfilled", "appt-3": "cancelled_by_patient",
                        "appt-dr2": "booked"}
    assert slots == 4
    assert problems == ["unknown Appointment.status 'on-hold' in 1 appointment(s): not mapped, rows quarantined"]


def test_no_name_phone_or_raw_patient_id_reaches_the_warehouse(tmp_path, settings_env, migrated_warehouse):
    name = f"pii_{secrets.token_hex(3)}"
    bundle = fhir_bundle(day=date(2026, 10, 30))
    bundle["entry"].append({"resource": {  # a quarantined row must not leak either
        "resourceType": "Appointment", "id": "appt-bad", "status": "mystery", "start": "2026-10-29T10:00:00+03:00",
        "participant": [{"actor": {"reference": "Patient/pat-cc03", "display": "Smirnova Olga"}},
                        {"actor": {"reference": "Practitioner/dr-1"}}]}})
    settings_env(sources=source_json(name, "fhir", write_json(tmp_path / "b.json", bundle)))
    summary = ingest.ingest(name, AS_OF)
    assert summary["core"]["patient"]["inserted"] == 3 and summary["quarantined"]["appointment"] == 1
    secrets_ = {s for family, given, phone in PATIENT_NAMES.values() for s in (family, given, phone)}
    secrets_ |= set(PATIENT_NAMES) | {phone.replace(" ", "").replace("-", "") for _, _, phone in PATIENT_NAMES.values()}
    secrets_ |= {"SNILS"}
    with migrated_warehouse.connect() as conn:
        columns = conn.execute(sa.text(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
            "AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'ARRAY')")).all()
        assert len({c.table_schema for c in columns}) >= 5
        for schema, table, column in columns:
            for secret in secrets_:
                hits = conn.execute(sa.text(
                    f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}"::text ILIKE :p'),
                    {"p": f"%{secret}%"}).scalar()
                assert hits == 0, f"{secret!r} found in {schema}.{table}.{column}"
    pages = list((get_settings().home / "gx" / name).rglob("*.html"))
    assert pages, "GX Data Docs were written"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not any(secret in text for secret in secrets_), page


def test_cli_ingest_and_sources_list(tmp_path, settings_env, migrated_warehouse, capsys):
    name = f"cli_{secrets.token_hex(3)}"
    path = write_vitoria(tmp_path / "v.csv", vitoria_rows(10))
    settings_env(sources=source_json(name, "csv", path, "vitoria", encoding="utf-8"))
    assert main(["sources", "list"]) == 0
    out = capsys.readouterr().out
    assert name in out and "csv (vitoria)" in out and "never loaded" in out and '"encoding": "utf-8"' in out
    assert main(["ingest", "--source", name, "--as-of", "2016-05-20"]) == 0
    out = capsys.readouterr().out
    assert f"OK  {name}: batch" in out and "10 appointments staged, 0 quarantined, 10 inserted" in out
    assert "GX Data Docs:" in out
    assert main(["ingest", "--source", name, "--as-of", "2016-05-20", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["core"]["appointment"] == {"inserted": 0, "updated": 0}
    assert main(["sources", "list"]) == 0
    assert "last load: batch" in capsys.readouterr().out
    assert main(["ingest", "--source", "nope"]) == 2
    write_vitoria(path, vitoria_rows(3), drop=("Age",))
    assert main(["ingest", "--source", name]) == 1
    assert "lacks column(s) ['Age']" in capsys.readouterr().err


KNOWN_NAMES = ("Секретова Глафира Ипатьевна", "Приватный Евлампий Сысоевич")
KNOWN_PHONES = ("+7 900 314-15-92", "+7 900 271-82-81")


def _text_columns(conn) -> list[tuple[str, str, str, str]]:
    return conn.execute(sa.text(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
        "AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'ARRAY')")).all()


def test_medialog_source_with_known_names_and_phones_leaves_no_trace(server_url, test_db_prefix, settings_env,
                                                                     migrated_warehouse):
    """The generated Medialog source gives known names and phones to its most active patients; after two
    nightly loads (the second one a day later, incremental) none of them — and no raw PATIENTS_ID — is
    anywhere in the warehouse: every text and JSON column of every schema is scanned."""
    from clinicflow import db
    from pipelines.sources import medialog_generator as gen

    today = date(2026, 11, 2)
    url = server_url.set(database=f"{test_db_prefix}_src_pii")
    gen.generate(url, appointments=3_000, seed=9, today=today, known_names=KNOWN_NAMES, known_phones=KNOWN_PHONES)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        people = conn.execute(sa.text('SELECT "PATIENTS_ID", "NOM", "TEL" FROM "PATIENTS"')).all()
    engine.dispose()
    name = f"ml_{secrets.token_hex(3)}"
    settings_env(sources=json.dumps([{"name": name, "kind": "medialog", "url": url.render_as_string(False),
                                      "options": gen.connector_options()}]))
    first = ingest.ingest(name, today)
    assert first["core"]["appointment"]["inserted"] > 1_000
    gen.advance(url, today + timedelta(days=1))
    db.dispose_engines()
    second = ingest.ingest(name, today + timedelta(days=1))
    changed = second["core"]["appointment"]["inserted"] + second["core"]["appointment"]["updated"]
    assert 0 < changed < first["core"]["appointment"]["inserted"] / 5, "the next day loads only what changed"

    words = {w for n in KNOWN_NAMES for w in n.split()[:2]}  # surname and given name of the known patients
    digits = {"".join(ch for ch in p if ch.isdigit()) for p in KNOWN_PHONES}
    phones = {r.TEL for r in people if r.TEL}  # every patient's phone, as the source writes it
    assert {w for n in KNOWN_NAMES for w in n.split()} & {r.NOM for r in people}, "the known names were used"
    assert set(KNOWN_PHONES) <= phones
    needles = sorted({*KNOWN_NAMES, *words, *digits, *phones})
    patterns = [f"%{n}%" for n in needles]
    raw_ids = {str(r.PATIENTS_ID) for r in people}
    with migrated_warehouse.connect() as conn:
        for schema, table, column, kind in _text_columns(conn):
            target = f'"{schema}"."{table}"'
            found = conn.execute(sa.text(f'SELECT "{column}"::text FROM {target} WHERE "{column}"::text LIKE ANY '
                                         "(:patterns) LIMIT 1"), {"patterns": patterns}).scalar()
            assert found is None, f"a patient's name or phone is in {schema}.{table}.{column}: {found[:80]!r}"
            if kind in ("jsonb", "json"):  # no JSON field is a patient id, no JSON value equals a raw id
                hits = conn.execute(sa.text(
                    f"SELECT count(*) FROM {target} t, jsonb_each_text(CASE WHEN jsonb_typeof(t.\"{column}\"::jsonb) "
                    f"= 'object' THEN t.\"{column}\"::jsonb ELSE '{{}}'::jsonb END) kv "
                    "WHERE kv.key ~* 'patients?_?(source_)?id' OR kv.value = ANY(:ids)"),
                    {"ids": sorted(raw_ids)}).scalar()
                assert hits == 0, f"{schema}.{table}.{column} has a patient field"
            if "patient" in column:  # a patient column holds keys, never a raw id
                values = set(conn.execute(sa.text(f'SELECT DISTINCT "{column}"::text FROM {target}')).scalars())
                assert not values & raw_ids, f"raw PATIENTS_ID in {schema}.{table}.{column}"
        keys = set(conn.execute(sa.text("SELECT patient_key FROM core.patient WHERE source = :s"),
                                {"s": name}).scalars())
    assert keys and all(len(k) == 32 for k in keys)
