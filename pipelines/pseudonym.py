"""Pseudonymisation of patient ids (152-FZ): a keyed HMAC-SHA256, computed before any write.

The key is ``CLINICFLOW_PSEUDONYM_SECRET``. The same source id always gives the same key (so
history links up across runs), and without the secret a key cannot be turned back into the id or
checked against a guessed id. The source name is part of the message, so equal ids in two sources
give different keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

KEY_LENGTH = 32  # hex characters (128 bits)


def normalise_id(raw: object) -> str | None:
    if raw is None:
        return None
    text = str(raw).strip()
    if text in ("", "nan", "None", "<NA>"):
        return None
    return text


def patient_key(secret: bytes, source: str, raw_id: object) -> str | None:
    """The pseudonymous key of one patient id (None for a missing id)."""
    text = normalise_id(raw_id)
    if text is None:
        return None
    digest = hmac.new(secret, f"{source}\x1f{text}".encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_LENGTH]


def patient_keys(secret: bytes, source: str, raw_ids: Iterable[object]) -> list[str | None]:
    """Keys for many ids; each distinct id is hashed once."""
    cache: dict[object, str | None] = {}
    out: list[str | None] = []
    for raw in raw_ids:
        try:
            key = cache[raw]
        except KeyError:
            key = cache[raw] = patient_key(secret, source, raw)
        except TypeError:  # unhashable
            key = patient_key(secret, source, raw)
        out.append(key)
    return out
