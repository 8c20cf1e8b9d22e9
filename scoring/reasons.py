"""Why an appointment is at risk, in plain words, from the model's SHAP contributions.

For each appointment the three features that push its predicted no-show risk up the most (largest
positive contributions; bias excluded) are turned into short phrases that use the appointment's own
values: "booked 41 days ahead", "missed 2 of the last 3 visits", "no reminder sent". Fewer than three
features may raise the risk; then fewer reasons are given. Phrases exist in English and Russian
(``CLINICFLOW_REASONS_LANGUAGE``); a feature without a phrase is shown as ``name = value``.

The work is vectorised: the top three per row come from one compiled pass over the contribution matrix
(numba), each (feature, value) phrase is made once and reused, and phrases travel as integer codes until
the end, so a million rows take about a second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numba
import numpy as np
import pandas as pd

Language = str  # "en" | "ru"
WEEKDAYS = {"en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
            "ru": ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье")}
MONTHS = {"en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                 "November", "December"),
          "ru": ("январе", "феврале", "марте", "апреле", "мае", "июне", "июле", "августе", "сентябре", "октябре",
                 "ноябре", "декабре")}
SEASONS = {"ru": {"winter": "зимой", "spring": "весной", "summer": "летом", "autumn": "осенью"}}
FLAG_WORDS = {
    "en": {"scholarship": "in a welfare programme", "welfare": "in a welfare programme",
           "hypertension": "has hypertension", "diabetes": "has diabetes", "alcoholism": "alcoholism recorded",
           "handicap": "has a disability"},
    "ru": {"scholarship": "участник социальной программы", "welfare": "участник социальной программы",
           "hypertension": "гипертония", "diabetes": "диабет", "alcoholism": "алкоголизм в анамнезе",
           "handicap": "инвалидность"},
}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def _int(value: Any) -> int:
    return round(float(value))


def plural_ru(n: int, one: str, few: str, many: str) -> str:
    n = abs(n)
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def _s(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _days_ru(n: int) -> str:
    return f"{n} {plural_ru(n, 'день', 'дня', 'дней')}"


def _times_ru(n: int) -> str:
    return f"{n} {plural_ru(n, 'раз', 'раза', 'раз')}"


def _bool(value: Any) -> bool:
    return bool(float(value)) if not isinstance(value, str) else value.lower() in ("true", "1", "yes")


Phrase = Callable[[Any, Mapping[str, Any]], str | None]


def _catalogue(lang: Language) -> dict[str, Phrase]:
    en = lang == "en"

    def lead_days(v, row):
        n = _int(v)
        if n <= 0:
            return "booked the same day" if en else "запись в день приёма"
        return f"booked {n} day{'s' if n != 1 else ''} ahead" if en else f"записан за {_days_ru(n)}"

    def lead_hours(v, row):
        n = _int(v)
        return f"booked {n} hours ahead" if en else f"записан за {n} {plural_ru(n, 'час', 'часа', 'часов')}"

    def same_day(v, row):
        if _bool(v):
            return "booked the same day" if en else "запись в день приёма"
        return "booked in advance" if en else "запись заранее"

    def weekday(prefix_en, prefix_ru):
        def phrase(v, row):
            k = _int(v) % 7
            return f"{prefix_en} {WEEKDAYS['en'][k]}" if en else f"{prefix_ru} {WEEKDAYS['ru'][k]}"
        return phrase

    def clock(v):
        hours = float(v)
        return f"{int(hours):02d}:{round((hours % 1) * 60) % 60:02d}"

    def prior_missed(v, row):
        noshows, total = row.get("prior_noshows"), row.get("prior_appointments")
        if _missing(noshows) or _missing(total) or _int(total) == 0:
            return "no earlier visits" if en else "прошлых приёмов нет"
        n, m = _int(noshows), _int(total)
        if en:
            return f"missed {n} of {m} earlier visits" if m > 1 else f"missed {n} of 1 earlier visit"
        return f"пропущено {n} из {m} прошлых приёмов"

    def days_since(kind_en, kind_ru, none_en, none_ru):
        def phrase(v, row):
            if _missing(v):
                return none_en if en else none_ru
            n = _int(v)
            return f"{kind_en} {n} days ago" if en else f"{kind_ru} {_days_ru(n)} назад"
        return phrase

    def count(en_fmt, ru_fmt):
        def phrase(v, row):
            n = _int(v)
            return en_fmt(n) if en else ru_fmt(n)
        return phrase

    def rate(what_en, what_ru):
        def phrase(v, row):
            pct = float(v) * 100
            return f"{what_en} no-show rate {pct:.0f}%" if en else f"доля неявок у {what_ru} {pct:.0f}%"
        return phrase

    def boolean(yes_en, no_en, yes_ru, no_ru):
        def phrase(v, row):
            return (yes_en if en else yes_ru) if _bool(v) else (no_en if en else no_ru)
        return phrase

    def named(what_en, what_ru):
        def phrase(v, row):
            return f"{what_en} {v}" if en else f"{what_ru} {v}"
        return phrase

    def position(v, row):
        x = float(v)
        if x < 1 / 3:
            return "early slot of the day" if en else "ранний слот дня"
        if x > 2 / 3:
            return "late slot of the day" if en else "поздний слот дня"
        return "middle of the day" if en else "середина дня"

    def season(v, row):
        return f"in {v}" if en else SEASONS["ru"].get(str(v), str(v))

    return {
        "lead_days": lead_days,
        "lead_hours": lead_hours,
        "same_day_booking": same_day,
        "booked_weekday": weekday("booked on a", "записан в"),
        "booked_hour": lambda v, row: (f"booked at {_int(v):02d}:00" if en else f"запись сделана в {_int(v):02d}:00"),
        "channel": named("booked via", "канал записи:"),
        "is_reschedule": boolean("a rescheduled booking", "not rescheduled", "перенесённая запись",
                                 "запись не переносилась"),
        "reschedule_depth": count(lambda n: f"rescheduled {_s(n, 'time')}", lambda n: f"переносилась {_times_ru(n)}"),
        "confirmed": boolean("booking confirmed", "booking not confirmed", "запись подтверждена",
                             "запись не подтверждена"),
        "appt_weekday": weekday("appointment on a", "приём в"),
        "appt_hour": lambda v, row: (f"appointment at {clock(v)}" if en else f"приём в {clock(v)}"),
        "slot_index": count(lambda n: f"slot {n + 1} of the day", lambda n: f"{n + 1}-й слот дня"),
        "slot_position": position,
        "day_slots": count(lambda n: f"{n}-slot day", lambda n: f"{n} слотов в день"),
        "duration_min": count(lambda n: f"{n}-minute visit", lambda n: f"приём {n} мин"),
        "service_id": named("service", "услуга"),
        "department_id": named("department", "отделение"),
        "practitioner_id": named("doctor", "врач"),
        "branch_id": named("branch", "филиал"),
        "is_day_off": boolean("on a day off", "on a working day", "в выходной день", "в рабочий день"),
        "is_public_holiday": boolean("on a public holiday", "not a holiday", "в праздник", "не праздник"),
        "is_shortened_day": boolean("on a shortened pre-holiday day", "a full working day",
                                    "в сокращённый предпраздничный день", "полный рабочий день"),
        "is_working_weekend": boolean("on a working weekend day", "a regular day", "в рабочую субботу/воскресенье",
                                      "обычный день"),
        "days_to_holiday": count(lambda n: f"{_s(n, 'day')} before a public holiday",
                                 lambda n: f"за {_days_ru(n)} до праздника"),
        "days_from_holiday": count(lambda n: f"{_s(n, 'day')} after a public holiday",
                                   lambda n: f"через {_days_ru(n)} после праздника"),
        "month": lambda v, row: (f"in {MONTHS['en'][_int(v) - 1]}" if en else f"в {MONTHS['ru'][_int(v) - 1]}"),
        "season": season,
        "age": count(lambda n: f"age {n}", lambda n: f"возраст {n}"),
        "sex": lambda v, row: ({"F": "female", "M": "male"}.get(str(v), str(v)) if en
                               else {"F": "женщина", "M": "мужчина"}.get(str(v), str(v))),
        "prior_appointments": prior_missed,
        "prior_attended": count(lambda n: f"came to {_s(n, 'earlier visit')}",
                                lambda n: f"был на прошлых приёмах: {n}"),
        "prior_noshows": prior_missed,
        "prior_noshow_rate": prior_missed,
        "prior_cancellations": count(lambda n: f"cancelled {_s(n, 'time')} before",
                                     lambda n: f"отмен записи раньше: {n}"),
        "prior_reschedules": count(lambda n: f"rescheduled {_s(n, 'time')} before",
                                   lambda n: f"переносов записи раньше: {n}"),
        "days_since_last_visit": days_since("last visit", "последний визит", "no earlier visit",
                                            "прошлых визитов нет"),
        "days_since_last_noshow": days_since("missed a visit", "пропуск приёма", "never missed a visit",
                                             "пропусков не было"),
        "same_day_appointments": count(lambda n: f"{_s(n, 'other appointment')} that day",
                                       lambda n: f"ещё {n} записей в тот же день"),
        "practitioner_noshow_rate": rate("doctor's", "врача"),
        "department_noshow_rate": rate("department's", "отделения"),
        "branch_noshow_rate": rate("branch's", "филиала"),
        "service_noshow_rate": rate("service's", "услуги"),
        "practitioner_volume": count(lambda n: f"doctor had {n} visits in 180 days",
                                     lambda n: f"у врача {n} приёмов за 180 дней"),
        "resource_day_booked": count(lambda n: f"{_s(n, 'other booking')} in the schedule that day",
                                     lambda n: f"ещё {n} записей в расписании на день"),
        "resource_day_fill": lambda v, row: (f"schedule {float(v) * 100:.0f}% booked" if en
                                             else f"расписание заполнено на {float(v) * 100:.0f}%"),
        "branch_day_booked": count(lambda n: f"{_s(n, 'other booking')} at the branch that day",
                                   lambda n: f"ещё {n} записей в филиале на день"),
        "reminder_sent": boolean("reminder sent", "no reminder sent", "напоминание отправлено",
                                 "напоминание не отправлялось"),
    }


#: Features whose phrase depends on other columns too (the phrase cache keys on all of them).
_COMPANIONS = {"prior_appointments": ("prior_noshows", "prior_appointments"),
               "prior_noshows": ("prior_noshows", "prior_appointments"),
               "prior_noshow_rate": ("prior_noshows", "prior_appointments")}
_MISSING_OK = {"days_since_last_visit", "days_since_last_noshow", "prior_appointments", "prior_noshows",
               "prior_noshow_rate"}


class Explainer:
    """Turns contribution matrices into the top-k reasons in plain words."""

    def __init__(self, language: Language = "en", names: Mapping[str, Mapping[str, str]] | None = None) -> None:
        if language not in ("en", "ru"):
            raise ValueError(f"reasons language {language!r}: expected 'en' or 'ru'")
        self.language = language
        self.phrases = _catalogue(language)
        #: display names per id column (practitioner_id → {"doc1": "Dr Ivanova"}, …)
        self.names = {k: dict(v) for k, v in (names or {}).items()}

    def phrase(self, feature: str, value: Any, row: Mapping[str, Any]) -> str | None:
        if feature.startswith("flag_"):
            key = feature[5:]
            if _missing(value) or float(value) <= 0:
                return None
            words = FLAG_WORDS[self.language].get(key)
            return words or (f"flag {key}" if self.language == "en" else f"отметка {key}")
        if feature.startswith("ext_"):
            return None if _missing(value) else f"{feature[4:]} {float(value):g}"
        if _missing(value) and feature not in _MISSING_OK:
            return None
        if feature in self.names and not _missing(value):
            raw = str(value).split(":", 1)[-1]
            value = self.names[feature].get(raw, raw)
        make = self.phrases.get(feature)
        if make is None:
            return f"{feature} = {value}"
        try:
            return make(value, row)
        except (TypeError, ValueError, IndexError):
            return f"{feature} = {value}"

    def top_reasons(self, contributions: pd.DataFrame, values: pd.DataFrame, k: int = 3) -> list[np.ndarray]:
        """``k`` arrays of phrases (None where fewer than ``k`` features raise the risk)."""
        features = [c for c in contributions.columns if c != "bias"]
        return self.top_reasons_of(contributions[features].to_numpy(dtype=float), features, values, k)

    def top_reasons_of(self, matrix: np.ndarray, features: list[str], values: Mapping[str, Any],
                       k: int = 3) -> list[np.ndarray]:
        """:meth:`top_reasons` of a contribution matrix (rows x ``features``, no bias column). ``values``: the
        rows' feature values by column name (a DataFrame, or any mapping of names to columns, e.g. a
        ``ChainMap`` of the feature rows and the model's inputs)."""
        n = len(matrix)
        if n == 0 or not features:
            return [np.full(n, None, dtype=object) for _ in range(k)]
        kk = min(k, len(features))
        top = _top_positive(np.ascontiguousarray(matrix, dtype=np.float64), kk)   # (n, kk), -1: none
        flat = top.ravel()
        slots = np.flatnonzero(flat >= 0)                 # positions (row * kk + slot) that hold a feature
        by_feature = slots[np.argsort(flat[slots], kind="stable")]
        bounds = np.searchsorted(flat[by_feature], np.arange(len(features) + 1))
        codes = np.full(n * kk, -1, dtype=np.int64)       # phrase code per position, -1: no phrase
        vocabulary: dict[str, int] = {}
        columns: dict[str, np.ndarray] = {}
        for f_index in np.flatnonzero(np.diff(bounds)):
            feature = features[int(f_index)]
            where = by_feature[bounds[f_index]:bounds[f_index + 1]]
            rows = where // kk
            present = [c for c in _COMPANIONS.get(feature, (feature,)) if c in values]
            if present:
                picked = []
                for c in present:
                    if c not in columns:
                        columns[c] = np.asarray(values[c])
                    picked.append(columns[c][rows])
                key = np.zeros(len(rows), dtype=np.int64)
                for column in picked:  # one integer per distinct combination of values (missing included)
                    value_codes, uniques = pd.factorize(column, use_na_sentinel=True)
                    key = key * (len(uniques) + 1) + (value_codes + 1)
                _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
                phrases = np.empty(len(first), dtype=np.int64)
                for code, pos in enumerate(first):  # one phrase per distinct value, not per row
                    row = {c: column[pos] for c, column in zip(present, picked, strict=True)}
                    phrases[code] = _code(vocabulary, self.phrase(feature, row.get(feature), row))
                codes[where] = phrases[inverse.reshape(-1)]
            else:
                codes[where] = _code(vocabulary, self.phrase(feature, None, {}))
        compact = _compact_codes(codes.reshape(n, kk))
        words = np.empty(len(vocabulary) + 1, dtype=object)
        words[:-1] = list(vocabulary)
        words[-1] = None                                   # code -1
        out = [words[compact[:, slot]] for slot in range(kk)]
        return out + [np.full(n, None, dtype=object) for _ in range(k - kk)]


def _code(vocabulary: dict[str, int], phrase: str | None) -> int:
    if phrase is None:
        return -1
    return vocabulary.setdefault(phrase, len(vocabulary))


@numba.njit(cache=True, nogil=True)
def _top_positive(matrix: np.ndarray, k: int) -> np.ndarray:
    """Per row the columns of the ``k`` largest positive (finite) values, largest first (ties: the lower
    column first); -1 where fewer than ``k`` values are positive."""
    n, m = matrix.shape
    out = np.full((n, k), -1, dtype=np.int64)
    best = np.empty(k)
    for i in range(n):
        count = 0
        for j in range(m):
            v = matrix[i, j]
            if not (v > 0.0) or not np.isfinite(v):
                continue
            if count == k and v <= best[k - 1]:
                continue
            p = count if count < k else k - 1              # insertion point, moving smaller values down
            while p > 0 and best[p - 1] < v:
                if p < k:
                    best[p] = best[p - 1]
                    out[i, p] = out[i, p - 1]
                p -= 1
            best[p] = v
            out[i, p] = j
            if count < k:
                count += 1
    return out


@numba.njit(cache=True, nogil=True)
def _compact_codes(codes: np.ndarray) -> np.ndarray:
    """Move phrases up over gaps (a top feature without a phrase) and say a repeated phrase once."""
    n, k = codes.shape
    out = np.full((n, k), -1, dtype=np.int64)
    for i in range(n):
        m = 0
        for slot in range(k):
            c = codes[i, slot]
            if c < 0:
                continue
            seen = False
            for q in range(m):
                if out[i, q] == c:
                    seen = True
                    break
            if not seen:
                out[i, m] = c
                m += 1
    return out
