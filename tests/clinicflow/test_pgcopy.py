"""The binary COPY encoder: what PostgreSQL stores from it equals what ADBC's driver stores from the same
Arrow table, for every type the writers use, NULLs, text edge cases, dictionaries and chunk boundaries;
the stream's framing is PostgreSQL's; an unknown type is refused with its column's name."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from clinicflow import db, pgcopy
from clinicflow.errors import ClinicFlowError

COLUMNS = ("i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, b boolean, s text, j jsonb, "
           "d date, ts timestamp, tz timestamptz, filled text DEFAULT 'default'")


def _table(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = ["", "Иванов, \"quoted\"\nline", "tab\there", "x" * 300, "日本", "back\\slash", "NULL", "\\N"]
    null = rng.random(n) < 0.2
    texts = [None if null[i] else words[i % len(words)] + str(i) for i in range(n)]
    flags = pa.array(rng.integers(0, 3, n), pa.int32())
    docs = pa.array(['{"welfare": 1}', "{}", None])
    return pa.table({
        "i2": pa.array(np.where(null, 0, rng.integers(-32768, 32767, n)), pa.int64(), mask=null),
        "i4": pa.array(rng.integers(-2**31, 2**31 - 1, n), pa.int64()),
        "i8": pa.array(rng.integers(-2**62, 2**62, n), pa.int64(), mask=rng.random(n) < 0.1),
        "f4": pa.array(rng.normal(size=n).astype(np.float32)),
        "f8": pa.array(np.concatenate([[np.inf, -np.inf, -0.0, 1e-300], rng.normal(size=n - 4)]),
                       mask=np.r_[[False] * 4, rng.random(n - 4) < 0.1]),
        "b": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1),
        "s": pa.array(texts, pa.string()),
        "j": pa.DictionaryArray.from_arrays(flags, docs),   # NULL inside the dictionary too
        "d": pa.array([dt.date(1999, 12, 31) + dt.timedelta(days=int(k)) for k in rng.integers(-800, 20000, n)]),
        "ts": pa.array((rng.integers(-10**15, 10**15, n) + 946_684_800_000_000), pa.timestamp("us")),
        "tz": pa.array(rng.integers(0, 2 * 10**15, n), pa.timestamp("us", tz="UTC"), mask=rng.random(n) < 0.1),
    })


@pytest.fixture()
def two_tables(migrated_warehouse):
    with db.connect() as conn:
        for name in ("ops.t_adbc", "ops.t_pgcopy"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE TABLE {name} (row_no integer, {COLUMNS})"))
    yield
    with db.connect() as conn:
        conn.execute(sa.text("DROP TABLE ops.t_adbc, ops.t_pgcopy"))


def test_postgresql_stores_what_adbc_stores(two_tables, monkeypatch):
    monkeypatch.setattr(pgcopy, "CHUNK_ROWS", 1000)  # several chunks, the last one short
    data = _table(2500)
    data = data.add_column(0, "row_no", pa.array(np.arange(len(data)), pa.int64()))
    with db.arrow_session() as session:
        assert session.ingest("ops.t_adbc", data) == 2500
    with db.copy_session() as session:
        assert session.ingest("ops.t_pgcopy", data) == 2500
        assert session.ingest("ops.t_pgcopy", data.slice(0, 0)) == 0
    with db.connect() as conn:
        def rows(table):
            return conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY row_no")).all()
        adbc, ours = rows("ops.t_adbc"), rows("ops.t_pgcopy")
        assert len(ours) == 2500 and ours == adbc
        assert conn.execute(sa.text("SELECT count(*) FROM ops.t_pgcopy WHERE j IS NULL")).scalar() > 0
        assert conn.execute(sa.text("SELECT count(*) FROM ops.t_pgcopy WHERE j ->> 'welfare' = '1'")).scalar() > 0
        assert conn.execute(sa.text("SELECT count(*) FROM ops.t_pgcopy WHERE filled = 'default'")).scalar() == 2500
        first = conn.execute(sa.text("SELECT f8 FROM ops.t_pgcopy WHERE row_no < 4 ORDER BY row_no")).scalars().all()
    assert first[:2] == [float("inf"), float("-inf")] and str(first[2]) == "-0.0"


def test_the_stream_is_postgresqls_binary_format():
    data = pa.table({"i": pa.array([1, None], pa.int32()), "s": ["ab", None], "d": [dt.date(2000, 1, 2), None]})
    stream = b"".join(pgcopy.encode(data))
    assert stream.startswith(b"PGCOPY\n\xff\r\n\x00") and stream.endswith(b"\xff\xff")
    body = stream[len(pgcopy.HEADER):-2]
    first = struct.pack(">h", 3) + struct.pack(">i", 4) + struct.pack(">i", 1) + struct.pack(">i", 2) + b"ab" \
        + struct.pack(">i", 4) + struct.pack(">i", 1)  # 2000-01-02: day 1 of PostgreSQL's epoch
    second = struct.pack(">h", 3) + struct.pack(">i", -1) * 3
    assert body == first + second


def test_unknown_types_and_columns_are_refused(two_tables):
    with pytest.raises(ClinicFlowError, match="'x' has Arrow type uint8"):
        list(pgcopy.encode(pa.table({"x": pa.array([1], pa.uint8())})))
    with pytest.raises(ClinicFlowError, match="has no column 'nope'"), db.copy_session() as session:
        session.ingest("ops.t_pgcopy", pa.table({"nope": [1]}))


def test_a_failed_session_rolls_back(two_tables):
    with pytest.raises(RuntimeError), db.copy_session() as session:
        session.ingest("ops.t_pgcopy", pa.table({"row_no": [1, 2]}))
        raise RuntimeError("boom")
    too_big = r"t_pgcopy.i2 \(smallint\): Integer value 70000 not in range"
    with pytest.raises(ClinicFlowError, match=too_big), db.copy_session() as session:
        session.ingest("ops.t_pgcopy", pa.table({"i2": pa.array([70000], pa.int64())}))
    with db.copy_session() as session:
        assert session.scalar("SELECT count(*) FROM ops.t_pgcopy") == 0
        session.execute("CREATE TEMP TABLE t_keys (k text) ON COMMIT DROP")
        assert session.ingest("t_keys", pa.table({"k": ["a", None]})) == 2  # a temporary table by its name
        assert session.scalar("SELECT count(k) FROM t_keys") == 1
