"""PostgreSQL's binary COPY format, encoded from Arrow tables by a compiled kernel.

The bulk writes of a scoring run (a million feature rows of 57 columns, a million risk rows) spent as much
CPU in the client encoding the COPY stream (ADBC's PostgreSQL driver: about 70 ns per value) as the
server spent storing it. Here each column becomes either fixed-width big-endian bytes (numpy, one
vectorised step per column) or variable-length bytes read straight from the Arrow buffers, and a numba
kernel lays the rows out: the field count, then per field its length (-1 for NULL) and its bytes.

:func:`encode` yields the stream in chunks of rows (bounded memory); :func:`clinicflow.db.copy_session`
sends it with ``COPY ... FROM STDIN (FORMAT binary)``. The Arrow columns must already have the exact
types of the target columns (``clinicflow.db`` casts them): int16/32/64, float32/64, bool, date32,
timestamp[us] (with or without a time zone), string or binary (jsonb: binary with its version byte).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numba
import numpy as np

from clinicflow.errors import ClinicFlowError

#: the header of a binary COPY stream: signature, flags, header extension length
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
#: the trailer: a field count of -1
TRAILER = b"\xff\xff"
#: rows encoded at a time (a chunk of a 57-column features table is about 8 MB: it stays in the caches while
#: each column is written into it)
CHUNK_ROWS = 16_384

_PG_EPOCH_DAYS = 10_957                  # 2000-01-01 in days since 1970-01-01
_PG_EPOCH_US = 946_684_800_000_000       # 2000-01-01 in microseconds since 1970-01-01


def encode(table: Any, chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """The binary COPY stream of the Arrow ``table`` (all its columns, in order): header, rows, trailer."""
    for field in table.schema:
        _check_type(field)
    yield HEADER
    for lo in range(0, table.num_rows, chunk_rows):
        yield _encode_rows(table.slice(lo, chunk_rows))
    yield TRAILER


def _check_type(field: Any) -> None:
    import pyarrow as pa

    t = field.type
    ok = (pa.types.is_integer(t) and t.bit_width in (16, 32, 64) and pa.types.is_signed_integer(t)) \
        or (pa.types.is_floating(t) and t.bit_width in (32, 64)) or pa.types.is_boolean(t) \
        or pa.types.is_date32(t) or (pa.types.is_timestamp(t) and t.unit == "us") \
        or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
        or pa.types.is_large_binary(t) \
        or (pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_binary(t.value_type)))
    if not ok:
        raise ClinicFlowError(f"binary COPY: column {field.name!r} has Arrow type {t}, which has no encoder")


def _encode_rows(table: Any) -> bytes:
    """One chunk of rows (no header): the row sizes, then each column's fields written at every row's cursor
    by a kernel of its kind (fixed width or variable)."""
    import pyarrow as pa

    n = table.num_rows
    columns = []
    sizes = np.full(n, 2, dtype=np.int64)  # the field count
    for c in range(table.num_columns):
        array = table.column(c).combine_chunks()
        if pa.types.is_dictionary(array.type) and array.dictionary.null_count:
            array = array.dictionary_decode()  # NULLs inside the dictionary: plain values
        valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
        var = _variable(array)
        if var is None:
            values = _fixed_bytes(array)
            lengths = np.full(n, values.shape[1], dtype=np.int64)
        else:
            index, offsets = var[0], var[1]
            lengths = offsets[index + 1] - offsets[index]
        if valid is not None:
            lengths = np.where(valid, lengths, 0)
        sizes += 4 + lengths
        columns.append((valid, values if var is None else None, var))
    cursor = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=cursor[1:])
    out = np.empty(int(cursor[-1] + sizes[-1]) if n else 0, dtype=np.uint8)
    _put_counts(out, cursor, table.num_columns)
    everything = np.ones(n, dtype=np.bool_)
    for valid, values, var in columns:
        valid = everything if valid is None else valid
        if var is None:
            _put_fixed(out, cursor, valid, values)
        else:
            _put_variable(out, cursor, valid, var[0], var[1], var[2])
    return out.tobytes()


def _variable(array: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(row -> value index, int64 offsets, bytes) of a text/binary column (dictionaries kept as they are);
    None for a fixed-width column."""
    import pyarrow as pa

    t = array.type
    if pa.types.is_dictionary(t):
        values = _variable(array.dictionary)
        assert values is not None
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return indices, values[1], values[2]
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)):
        return None
    wide = array.cast(pa.large_binary())
    buffers = wide.buffers()
    offs = np.frombuffer(buffers[1], dtype=np.int64)[wide.offset: wide.offset + len(wide) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return np.arange(len(wide), dtype=np.int64), offs, data


def _fixed_bytes(array: Any) -> np.ndarray:
    """The big-endian bytes of a fixed-width column, one row per row (NULL rows hold zeros)."""
    import pyarrow as pa

    t = array.type
    if pa.types.is_boolean(t):
        return array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8).reshape(-1, 1)
    if pa.types.is_date32(t):
        values = array.cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return (values - _PG_EPOCH_DAYS).astype(">i4").view(np.uint8).reshape(-1, 4)
    if pa.types.is_timestamp(t):
        values = array.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return (values - _PG_EPOCH_US).astype(">i8").view(np.uint8).reshape(-1, 8)
    values = array.fill_null(0).to_numpy(zero_copy_only=False)
    width = t.bit_width // 8
    kind = "f" if pa.types.is_floating(t) else "i"
    return values.astype(f">{kind}{width}").view(np.uint8).reshape(-1, width)


@numba.njit(cache=True, nogil=True)
def _put_int32(out, at, value):  # pragma: no cover - compiled
    out[at] = (value >> 24) & 0xFF
    out[at + 1] = (value >> 16) & 0xFF
    out[at + 2] = (value >> 8) & 0xFF
    out[at + 3] = value & 0xFF


@numba.njit(cache=True, nogil=True)
def _put_counts(out, cursor, ncols):  # pragma: no cover - compiled
    for i in range(cursor.shape[0]):
        at = cursor[i]
        out[at] = (ncols >> 8) & 0xFF
        out[at + 1] = ncols & 0xFF
        cursor[i] = at + 2


@numba.njit(cache=True, nogil=True)
def _put_fixed(out, cursor, valid, values):  # pragma: no cover - compiled
    w = values.shape[1]
    for i in range(cursor.shape[0]):
        at = cursor[i]
        if not valid[i]:
            _put_int32(out, at, -1)
            cursor[i] = at + 4
            continue
        _put_int32(out, at, w)
        at += 4
        for b in range(w):
            out[at + b] = values[i, b]
        cursor[i] = at + w


@numba.njit(cache=True, nogil=True)
def _put_variable(out, cursor, valid, index, offsets, data):  # pragma: no cover - compiled
    for i in range(cursor.shape[0]):
        at = cursor[i]
        if not valid[i]:
            _put_int32(out, at, -1)
            cursor[i] = at + 4
            continue
        k = index[i]
        lo = offsets[k]
        length = offsets[k + 1] - lo
        _put_int32(out, at, length)
        at += 4
        out[at: at + length] = data[lo: lo + length]
        cursor[i] = at + length
