from __future__ import annotations

from pipelines.pseudonym import KEY_LENGTH, patient_key, patient_keys

SECRET = b"0123456789abcdef-test"


def test_key_is_stable_keyed_and_source_scoped():
    key = patient_key(SECRET, "medialog", 12345)
    assert key == patient_key(SECRET, "medialog", "12345 ")
    assert len(key) == KEY_LENGTH and "12345" not in key
    assert key != patient_key(b"another-secret-0123", "medialog", 12345)
    assert key != patient_key(SECRET, "fhir", 12345)


def test_missing_ids_stay_missing():
    assert patient_key(SECRET, "s", None) is None
    assert patient_key(SECRET, "s", " ") is None
    assert patient_keys(SECRET, "s", [1, None, 1]) == [patient_key(SECRET, "s", 1), None, patient_key(SECRET, "s", 1)]
