"""The production calendar behind the calendar features: non-working days, public holidays, shortened
pre-holiday working days, working weekend days, and the distance to the nearest public holiday.

Public holidays and transfers come from the ``holidays`` package. For Russia it knows the public
holidays of the Labour Code (art. 112), the days off moved by the government's yearly decree
("Day off (substituted from …)") and the weekend days made working days by those decrees
(``weekend_workdays``). It does **not** know the shortened working days (art. 95: the working day
immediately before a non-working public holiday is one hour shorter). They are derived here by two
rules that reproduce the official production calendars:

1. a working day whose next calendar day is a public holiday is shortened
   (2023: 22 Feb, 7 Mar, 3 Nov; 2024: 22 Feb, 7 Mar, 8 May, 11 Jun; 2025: 7 Mar, 30 Apr, 11 Jun);
2. a weekend day made a working day by a transfer decree, followed by non-working days up to a public
   holiday, is shortened (2016-02-20, 2018-04-28, 2018-06-09, 2018-12-29, 2021-02-20, 2022-03-05,
   2024-04-27, 2024-11-02, 2024-12-28, 2025-11-01).

A Friday before a Monday holiday is not shortened (the weekend lies in between), nor is a day before
a day off that was only moved (2023-05-05 before the moved 8 May). Where a decree deviates from these
rules, add the date to :data:`SHORTENED_DAYS_ADDED` or :data:`SHORTENED_DAYS_REMOVED` with its source.
Shortened days are a Russian institution: for other countries the flag is always false.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

log = logging.getLogger(__name__)

#: Calendar years materialised around the data (holiday distances need neighbouring years).
DEFAULT_FIRST_YEAR = 2010
DEFAULT_LAST_YEAR = 2030
#: Distances to a holiday are capped at this many days (the feature saturates far from holidays).
MAX_HOLIDAY_DISTANCE = 60

#: Shortened days that the rules above miss, per country, each with its source. None known today.
SHORTENED_DAYS_ADDED: dict[str, dict[date, str]] = {"RU": {}}
#: Days the rules mark as shortened that an official calendar does not. None known today.
SHORTENED_DAYS_REMOVED: dict[str, dict[date, str]] = {"RU": {}}


@dataclass(frozen=True)
class CalendarDay:
    country: str
    day: date
    is_day_off: bool
    is_public_holiday: bool
    is_shortened_day: bool
    is_working_weekend: bool
    holiday_name: str | None
    days_to_holiday: int | None
    days_from_holiday: int | None


def _country_calendar(country: str, years: range):
    import holidays

    code, _, subdiv = country.partition("-")
    try:
        return holidays.country_holidays(code, subdiv=subdiv or None, years=years, language="en_US")
    except NotImplementedError as exc:
        from clinicflow.errors import ConfigError

        raise ConfigError(
            f"CLINICFLOW_HOLIDAY_COUNTRY={country!r} is not known to the holidays package ({exc}); "
            "use an ISO country code such as RU, or RU-MOW / BR-ES for a region"
        ) from None


def _is_substitute(name: str) -> bool:
    return "substituted" in name.lower() or "observed" in name.lower()


def build_calendar(country: str = "RU", first_year: int = DEFAULT_FIRST_YEAR,
                   last_year: int = DEFAULT_LAST_YEAR) -> list[CalendarDay]:
    """Every day of ``first_year``…``last_year`` with its calendar attributes."""
    if first_year > last_year:
        raise ValueError(f"first_year {first_year} is after last_year {last_year}")
    # one year either side so that distances at the edges are right
    years = range(first_year - 1, last_year + 2)
    cal = _country_calendar(country, years)
    code = country.partition("-")[0].upper()
    working_weekends: set[date] = set(getattr(cal, "weekend_workdays", set()) or set())
    public: dict[date, str] = {}
    moved: dict[date, str] = {}
    for day, name in cal.items():
        names = [n.strip() for n in str(name).split(";")]
        real = [n for n in names if not _is_substitute(n)]
        if real:
            public[day] = "; ".join(real)
        else:
            moved[day] = "; ".join(names)

    first, last = date(years.start, 1, 1), date(years.stop - 1, 12, 31)

    def day_off(d: date) -> bool:
        if d in public or d in moved:
            return True
        return d.weekday() >= 5 and d not in working_weekends

    shortened = _shortened_days(code, first, last, public, working_weekends, day_off)

    # nearest public holiday before and after each day
    holidays_sorted = sorted(public)
    out: list[CalendarDay] = []
    start, end = date(first_year, 1, 1), date(last_year, 12, 31)
    next_idx = 0
    d = start
    while d <= end:
        while next_idx < len(holidays_sorted) and holidays_sorted[next_idx] < d:
            next_idx += 1
        nxt = holidays_sorted[next_idx] if next_idx < len(holidays_sorted) else None
        prev_idx = next_idx - 1 if (nxt is None or nxt != d) else next_idx
        prev = holidays_sorted[prev_idx] if prev_idx >= 0 else None
        to_h = (nxt - d).days if nxt is not None else None
        from_h = (d - prev).days if prev is not None else None
        out.append(CalendarDay(
            country=country.upper(), day=d, is_day_off=day_off(d), is_public_holiday=d in public,
            is_shortened_day=d in shortened, is_working_weekend=d in working_weekends,
            holiday_name=public.get(d) or moved.get(d),
            days_to_holiday=None if to_h is None else min(to_h, MAX_HOLIDAY_DISTANCE),
            days_from_holiday=None if from_h is None else min(from_h, MAX_HOLIDAY_DISTANCE),
        ))
        d += timedelta(days=1)
    return out


def _shortened_days(code: str, first: date, last: date, public: dict[date, str], working_weekends: set[date],
                    day_off) -> set[date]:
    shortened: set[date] = set()
    if code != "RU":
        return shortened
    d = first
    while d < last:
        if not day_off(d):
            following = d + timedelta(days=1)
            if following in public:
                shortened.add(d)  # rule 1
            elif d in working_weekends:
                probe = following  # rule 2: a working weekend day before a block that holds a holiday
                while probe <= last and day_off(probe):
                    if probe in public:
                        shortened.add(d)
                        break
                    probe += timedelta(days=1)
        d += timedelta(days=1)
    shortened |= set(SHORTENED_DAYS_ADDED.get(code, {}))
    shortened -= set(SHORTENED_DAYS_REMOVED.get(code, {}))
    return shortened


def materialise(country: str, conn, first_year: int = DEFAULT_FIRST_YEAR, last_year: int = DEFAULT_LAST_YEAR) -> int:
    """Write the calendar of ``country`` into ``features.calendar_day`` (idempotent); return the rows.

    ``conn`` is a SQLAlchemy connection in a transaction. Skipped when the table already holds the
    same span for the country (the calendar changes only with a new ``holidays`` release).
    """
    import sqlalchemy as sa

    country = country.upper()
    have = conn.execute(sa.text(
        "SELECT min(day), max(day), count(*) FROM features.calendar_day WHERE country = :c"
    ), {"c": country}).one()
    want_first, want_last = date(first_year, 1, 1), date(last_year, 12, 31)
    if have[0] == want_first and have[1] == want_last and have[2] == (want_last - want_first).days + 1:
        return 0
    days = build_calendar(country, first_year, last_year)
    conn.execute(sa.text("DELETE FROM features.calendar_day WHERE country = :c"), {"c": country})
    rows = [day.__dict__ for day in days]
    conn.execute(sa.text(
        "INSERT INTO features.calendar_day (country, day, is_day_off, is_public_holiday, is_shortened_day, "
        "is_working_weekend, holiday_name, days_to_holiday, days_from_holiday) VALUES (:country, :day, "
        ":is_day_off, :is_public_holiday, :is_shortened_day, :is_working_weekend, :holiday_name, "
        ":days_to_holiday, :days_from_holiday)"
    ), rows)
    log.info("calendar %s: %d days (%s…%s) written to features.calendar_day", country, len(rows),
             want_first, want_last)
    return len(rows)
