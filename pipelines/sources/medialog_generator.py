"""Demo/test generator: a realistic Medialog-shaped source in its own PostgreSQL database.

``generate()`` draws a whole clinic — branches, departments, doctors with weekly slot grids and
leave, patients (with fake names and phones), two or more years of bookings with cancellations,
reschedules, deletions, arrivals, visit records, bills and SMS reminders, and bookings for the weeks
after its "today" — and writes it with COPY into Medialog's tables (quoted UPPERCASE names, the
encodings of docs/medialog.md). ``advance()`` moves the source's clock forward: that day's patients
come or not, new bookings are made, some are cancelled, rescheduled or deleted, all with
``KRN_MODIFY_DATE`` inside the simulated days. A second ingest the next day therefore has exactly
one day of changes to load.

How it works: every booking's whole life (when it is booked, confirmed, cancelled, deleted, when the
patient arrives, the visit record and the bill, the reminder) is drawn up front as a timeline of
event times, seeded and vectorised with numpy. The Medialog tables show the state of that timeline
at the clock; bookings with events still to come are kept in ``CLINICFLOW_TIMELINE`` and
``advance()`` replays their events up to the new clock. The true no-show probability of every
booking is in ``CLINICFLOW_TRUTH`` (not part of Medialog), so tests and docs can state the best AUC
any model could reach. docs/medialog-generator.md explains the mechanism and its effect sizes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from clinicflow import db
from clinicflow.errors import ClinicFlowError, ConfigError
from clinicflow.logs import timed
from pipelines.sources import medialog_grid as grid
from pipelines.sources import medialog_schema as schema
from pipelines.sources.medialog_model import EFFECTS, HolidayCalendar, auc, noshow_logit, sigmoid, solve_intercept

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
DAY = grid.MINUTES_PER_DAY
NEVER = np.int64(1) << np.int64(50)  # "this event never happens" (far beyond any clock)
MIN_APPOINTMENTS = 1_000
MAX_APPOINTMENTS = 5_000_000  # memory: about 2.8 GB per million appointments while generating

# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Rates are shares of bookings; see docs/medialog-generator.md."""

    appointments: int
    today: date
    seed: int = 42
    #: Days of history before ``today`` (at least two years).
    history_days: int = 760
    #: How far ``advance()`` can move the clock after ``today``.
    horizon_days: int = 60
    #: Longest lead time between booking and appointment.
    max_lead_days: int = 90
    #: Number of branches (default: 2 below 250k appointments, then one more per 250k, at most 5).
    branches: int | None = None
    #: Share of no-shows among kept bookings in the past (solved exactly by the intercept).
    noshow_rate: float = 0.14
    #: Share of final bookings of a slot that the patient cancels.
    cancel_rate: float = 0.11
    #: Chance that a slot had an earlier booking that was cancelled before it was re-booked.
    prior_cancel_rate: float = 0.08
    #: Share of cancellations that are reschedules (a new booking with SOURCE_PLANNING_ID).
    reschedule_share: float = 0.35
    #: Bookings deleted by the registrar (STATUS = 1) soon after they were made.
    soft_delete_rate: float = 0.012
    #: Bookings physically deleted from PLANNING at some point.
    hard_delete_rate: float = 0.003
    #: Known full names ("Фамилия Имя Отчество") and phones given to the most active patients.
    known_names: tuple[str, ...] = ()
    known_phones: tuple[str, ...] = ()

    def validate(self) -> None:
        if not MIN_APPOINTMENTS <= self.appointments <= MAX_APPOINTMENTS:
            raise ConfigError(f"appointments must be between {MIN_APPOINTMENTS:,} and {MAX_APPOINTMENTS:,}, "
                              f"got {self.appointments:,}")
        if self.history_days < 730:
            raise ConfigError(f"history_days must be at least 730 (two years), got {self.history_days}")
        if not 1 <= self.horizon_days <= 366:
            raise ConfigError(f"horizon_days must be between 1 and 366, got {self.horizon_days}")
        if not 14 <= self.max_lead_days <= 365:
            raise ConfigError(f"max_lead_days must be between 14 and 365, got {self.max_lead_days}")
        if self.branches is not None and not 1 <= self.branches <= len(BRANCH_NAMES):
            raise ConfigError(f"branches must be between 1 and {len(BRANCH_NAMES)}, got {self.branches}")
        for name in ("noshow_rate", "cancel_rate", "prior_cancel_rate", "reschedule_share",
                     "soft_delete_rate", "hard_delete_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 0.9 or (name == "noshow_rate" and value <= 0):
                raise ConfigError(f"{name} must be in (0, 0.9), got {value}")
        for name in self.known_names:
            if len(name.split()) < 2:
                raise ConfigError(f"known_names: {name!r} is not 'Фамилия Имя [Отчество]'")

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["today"] = self.today.isoformat()
        data["known_names"] = len(self.known_names)  # the names themselves are not stored twice
        data["known_phones"] = len(self.known_phones)
        return json.dumps(data, ensure_ascii=False, sort_keys=True)


@dataclass
class GeneratorSummary:
    """What a ``generate()`` or ``advance()`` run did (JSON-able)."""

    database: str
    clock: str
    seed: int
    horizon_end: str
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# the clinic


@dataclass(frozen=True)
class Specialty:
    name: str
    code: str
    slot_minutes: int
    weight: float          # share of doctors
    mean_lead_days: float  # mean lead time of bookings made a day or more ahead
    same_day: float        # share of same-day bookings
    effect: float          # no-show log odds ratio of the specialty
    child_share: float     # share of its patients who are children
    room: bool = False     # a room/device schedule, not a doctor


SPECIALTIES = (
    Specialty("Терапия", "THER", 20, 0.20, 4, 0.30, 0.0, 0.0),
    Specialty("Педиатрия", "PED", 20, 0.12, 3, 0.35, -0.20, 1.0),
    Specialty("Кардиология", "CARD", 30, 0.07, 12, 0.08, 0.0, 0.0),
    Specialty("Неврология", "NEUR", 30, 0.08, 10, 0.10, 0.05, 0.02),
    Specialty("Акушерство и гинекология", "GYN", 20, 0.09, 8, 0.12, 0.0, 0.01),
    Specialty("Офтальмология", "OPHT", 20, 0.07, 9, 0.12, 0.0, 0.15),
    Specialty("Оториноларингология", "ENT", 20, 0.07, 5, 0.25, 0.0, 0.20),
    Specialty("Дерматовенерология", "DERM", 20, 0.06, 7, 0.15, 0.10, 0.10),
    Specialty("Эндокринология", "ENDO", 30, 0.05, 14, 0.06, 0.05, 0.02),
    Specialty("Хирургия", "SURG", 20, 0.05, 6, 0.20, 0.0, 0.05),
    Specialty("Урология", "UROL", 20, 0.04, 8, 0.12, 0.05, 0.0),
    Specialty("Гастроэнтерология", "GAST", 30, 0.04, 12, 0.08, 0.0, 0.02),
    Specialty("Психотерапия", "PSY", 60, 0.03, 10, 0.05, 0.30, 0.0),
    Specialty("Ультразвуковая диагностика", "US", 15, 0.0, 5, 0.20, -0.10, 0.10, room=True),
)
BRANCH_NAMES = ("Клиника на Ленина", "Филиал «Северный»", "Филиал «Южный»", "Филиал «Заречный»",
                "Филиал «Центральный»")
#: PL_LEG ids: exceptions (PL_EXCL) and bands (PL_INT).
LEG_VACATION, LEG_SICK, LEG_BLOCK, LEG_BREAK = 1, 2, 3, 10
#: Users that create bookings (MEDECINS rows that are not doctors).
USER_ADMIN, USER_WEB, USER_HUB = 1, 2, 3
CALL_CENTRE_USERS = (4, 5, 6, 7)
CHANNELS = ("web", "hub", "phone", "reception", "doctor")
CH_WEB, CH_HUB, CH_PHONE, CH_RECEPTION, CH_DOCTOR = range(5)
ROOM_LOAD = 1.5  # an ultrasound room's weekly slots relative to a doctor's
REMINDER_TYPE = "PLANNING_AUTO_NOTIFY"
CONFIRMATION_TYPE = "PLANNING_CREATE_NOTIFY"


def connector_options() -> dict[str, Any]:
    """Connector options that match a generated source (the demo's CLINICFLOW_SOURCES entry)."""
    return {
        "channel_by_creator": {str(USER_WEB): "web", str(USER_HUB): "hub",
                               **{str(u): "phone" for u in CALL_CENTRE_USERS}},
        "exclusion_leg_ids": [LEG_VACATION, LEG_SICK, LEG_BLOCK],
        "reminder_rec_types": [REMINDER_TYPE],
    }


@dataclass
class Clinic:
    """The organisation: Medialog reference frames plus per-schedule arrays the simulation uses."""

    frames: dict[str, pd.DataFrame]
    resources: pd.DataFrame  # one row per PL_SUBJ with simulation attributes
    registrars: dict[int, np.ndarray]  # branch id → MEDECINS ids of its registrars


_SURNAMES = ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов",
             "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров",
             "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин",
             "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев", "Григорьев", "Романов", "Воробьёв")
_MALE_NAMES = ("Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья",
               "Кирилл", "Михаил", "Никита", "Матвей", "Роман", "Егор", "Иван", "Павел", "Владимир")
_FEMALE_NAMES = ("Анна", "Мария", "Елена", "Ольга", "Наталья", "Татьяна", "Ирина", "Екатерина",
                 "Светлана", "Юлия", "Дарья", "Анастасия", "Полина", "Виктория", "Ксения", "Алина")
_PATRONYMS = ("Александров", "Дмитриев", "Сергеев", "Андреев", "Алексеев", "Михайлов", "Иванов",
              "Владимиров", "Николаев", "Петров", "Викторов", "Юрьев", "Олегов", "Игорев")
_MOTIFS = ("Плановый осмотр", "Повторный приём", "Боли", "Консультация по анализам", "Справка",
           "Профосмотр", "Контроль лечения", "")


def _fio(rng: np.random.Generator, male: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(male)
    surname = np.asarray(_SURNAMES, dtype=object)[rng.integers(0, len(_SURNAMES), n)]
    surname = np.where(male, surname, surname + "а")
    first = np.where(male, np.asarray(_MALE_NAMES, dtype=object)[rng.integers(0, len(_MALE_NAMES), n)],
                     np.asarray(_FEMALE_NAMES, dtype=object)[rng.integers(0, len(_FEMALE_NAMES), n)])
    patronym = np.asarray(_PATRONYMS, dtype=object)[rng.integers(0, len(_PATRONYMS), n)]
    patronym = np.where(male, patronym + "ич", patronym + "на")
    return surname, first, patronym


def _phones(rng: np.random.Generator, n: int) -> np.ndarray:
    digits = rng.integers(0, 10_000_000, n)
    codes = rng.choice(np.array([900, 903, 905, 909, 915, 916, 925, 926, 977, 985, 999]), n)
    text = pd.Series(digits).map(lambda d: f"{d:07d}")
    return ("+7 " + pd.Series(codes).astype(str) + " " + text.str[:3] + "-" + text.str[3:5] + "-"
            + text.str[5:]).to_numpy(dtype=object)


def _branch_count(cfg: GeneratorConfig) -> int:
    return cfg.branches or min(len(BRANCH_NAMES), max(2, int(np.ceil(cfg.appointments / 250_000))))


def _doctor_count(appointments: int) -> int:
    return max(6, int(np.ceil(appointments / 9_000)))


def _build_clinic(cfg: GeneratorConfig, rng: np.random.Generator, doctors: int, weekly_slots: float,
                  first_day: int, last_day: int, history_start: int, holidays: HolidayCalendar) -> Clinic:
    """Branches, departments, doctors, rooms and their slot grids (PL_AGEND/PL_DAY/PL_INT)."""
    n_branches = _branch_count(cfg)
    branches = np.arange(1, n_branches + 1)
    fm_org = pd.DataFrame({
        "FM_ORG_ID": np.concatenate([branches, [501, 502, 503]]),
        "CODE": [f"F{b:02d}" for b in branches] + ["SK1", "SK2", "LAB"],
        "LABEL": [*list(BRANCH_NAMES[:n_branches]), "СК «Надёжная»", "СК «Медполис»", "Лаборатория «ИНВИТРО»"],
        "ORG_TYPE": ["I"] * n_branches + ["E", "E", "E"],
        "ARCHIVE": 0,
    })
    doctor_specs = [s for s in SPECIALTIES if not s.room]
    weights = np.array([s.weight for s in doctor_specs])
    spec_idx = np.concatenate([
        np.arange(min(doctors, len(doctor_specs))),
        rng.choice(len(doctor_specs), max(0, doctors - len(doctor_specs)), p=weights / weights.sum()),
    ])
    branch_weights = np.linspace(1.6, 0.8, n_branches)
    doc_branch = rng.choice(branches, doctors, p=branch_weights / branch_weights.sum())
    doc_branch[: min(doctors, n_branches)] = branches[: min(doctors, n_branches)]
    room_spec = next(i for i, s in enumerate(SPECIALTIES) if s.room)
    # Doctors first, then one ultrasound room per branch.
    res_spec = np.concatenate([spec_idx, np.full(n_branches, room_spec)])
    res_branch = np.concatenate([doc_branch, branches])
    n_res = len(res_spec)
    is_room = np.arange(n_res) >= doctors

    deps = sorted({(int(b), int(s)) for b, s in zip(res_branch, res_spec, strict=True)})
    dep_id = {key: 100 + i for i, key in enumerate(deps)}
    fm_dep = pd.DataFrame({
        "FM_DEP_ID": [dep_id[k] for k in deps],
        "LABEL": [f"{SPECIALTIES[s].name} ({BRANCH_NAMES[b - 1]})" for b, s in deps],
        "FM_INTORG_ID": [b for b, _ in deps], "ARCHIVE": 0,
    })
    specialisation = pd.DataFrame({"SPECIALISATION_ID": np.arange(1, len(SPECIALTIES) + 1),
                                   "NAME": [s.name for s in SPECIALTIES]})

    # Users (not doctors): admin, web booking, regional hub, call centre, registrars per branch.
    registrars = {int(b): np.array([20 + 2 * (b - 1), 21 + 2 * (b - 1)]) for b in branches}
    users = [(USER_ADMIN, "Администратор", "Системный", 1), (USER_WEB, "Онлайн-запись", "Сайт", 1),
             (USER_HUB, "Интеграция", "РЕГИЗ", 1)]
    users += [(u, "Оператор", f"колл-центра {i + 1}", 0) for i, u in enumerate(CALL_CENTRE_USERS)]
    for b, ids in registrars.items():
        users += [(int(u), "Регистратор", f"филиала {b}-{j + 1}", 0) for j, u in enumerate(ids)]
    male = rng.random(doctors) < 0.4
    d_nom, d_prenom, d_patr = _fio(rng, male)
    doc_ids = 1000 + np.arange(doctors)

    # Employment: some doctors join or leave during the history.
    hire = np.where(rng.random(doctors) < 0.10, rng.integers(history_start + 60, history_start + 500, doctors), -1)
    leave = np.where(rng.random(doctors) < 0.08, rng.integers(history_start + 300, last_day - 120, doctors), -1)
    leave = np.where((hire >= 0) & (leave >= 0) & (leave < hire + 120), -1, leave)
    archived = (leave >= 0) & (leave < last_day)
    medecins = pd.DataFrame({
        "MEDECINS_ID": np.concatenate([[u[0] for u in users], doc_ids]),
        "NOM": [u[1] for u in users] + list(d_nom),
        "PRENOM": [u[2] for u in users] + list(d_prenom),
        "PATRONYME": [None] * len(users) + list(d_patr),
        "SPECIALISATION_ID": [None] * len(users) + list(spec_idx + 1),
        "TYPE": [u[3] for u in users] + [0] * doctors,
        "ARCHIVE": [0] * len(users) + list(archived.astype(int)),
    })
    meddep = pd.DataFrame({
        "MEDDEP_ID": 5000 + np.arange(doctors), "MEDECINS_ID": doc_ids,
        "FM_DEP_ID": [dep_id[(int(b), int(s))] for b, s in zip(doc_branch, spec_idx, strict=True)],
        "ARCHIVE": archived.astype(int),
    })
    exams, exam_of_spec = [], {}
    for i, s in enumerate(SPECIALTIES):
        base = 300 + 10 * i
        names = (("УЗИ брюшной полости", "УЗИ щитовидной железы") if s.room
                 else (f"Первичный приём: {s.name.lower()}", f"Повторный приём: {s.name.lower()}"))
        exam_of_spec[i] = (base, base + 1)
        exams += [(base, names[0], f"{s.code}-01", s.slot_minutes),
                  (base + 1, names[1], f"{s.code}-02", s.slot_minutes)]
    pl_exam = pd.DataFrame(exams, columns=["PL_EXAM_ID", "NAME", "CODE", "DUREE"])
    pl_leg = pd.DataFrame({"PL_LEG_ID": [LEG_VACATION, LEG_SICK, LEG_BLOCK, LEG_BREAK],
                           "NAME": ["Отпуск", "Больничный", "Учёба/совещание", "Перерыв"],
                           "COLOR": [255, 65280, 16711680, 8421504]})

    res_ids = 2000 + np.arange(n_res)
    agend_ids = 3000 + np.arange(n_res)
    slot_min = np.array([SPECIALTIES[s].slot_minutes for s in res_spec])
    names = [f"{d_nom[i]} {d_prenom[i][0]}.{d_patr[i][0]}. ({SPECIALTIES[res_spec[i]].name})" if not is_room[i]
             else f"Кабинет УЗИ ({BRANCH_NAMES[res_branch[i] - 1]})" for i in range(n_res)]
    pl_subj = pd.DataFrame({
        "PL_SUBJ_ID": res_ids, "NAME": names, "OWNER_TYPE": np.where(is_room, 1, 2),
        "MEDECINS_ID": pd.array(np.where(is_room, 0, np.concatenate([doc_ids, np.zeros(n_branches, int)])),
                                dtype="Int64"),
        "MEDDEP_ID": pd.array(np.concatenate([meddep["MEDDEP_ID"].to_numpy(), np.zeros(n_branches, int)]),
                              dtype="Int64"),
        "FM_INTORG_ID": res_branch, "SPECIALISATION_ID": res_spec + 1,
        "LIEU": [f"каб. {100 + i}" for i in range(n_res)],
        "PL_EXAM_ID": [exam_of_spec[s][0] for s in res_spec], "PL_AGEND_ID1": agend_ids,
        "ARCHIVE": np.concatenate([archived.astype(int), np.zeros(n_branches, int)]),
        "NO_SMS_NOTIFY": (rng.random(n_res) < 0.05).astype(int),
    })
    pl_subj.loc[is_room, ["MEDECINS_ID", "MEDDEP_ID"]] = pd.NA
    created = _minutes_to_ts(np.full(n_res, (history_start - 400) * DAY + 9 * 60))
    pl_subj["KRN_CREATE_DATE"] = created
    pl_subj["KRN_MODIFY_DATE"] = created
    pl_agend = pd.DataFrame({"PL_AGEND_ID": agend_ids, "NAME": [f"Сетка {n}" for n in names],
                             "DUREE_TRANCHE": slot_min, "OWNER_TYPE": 2, "ARCHIVE": 0})

    day_rows, band_rows = _day_rules(rng, agend_ids, slot_min, weekly_slots, is_room, hire, leave,
                                     history_start, first_day, last_day, holidays)
    pl_day = pd.DataFrame(day_rows)
    pl_int = pd.DataFrame(band_rows) if band_rows else pd.DataFrame(
        columns=["PL_INT_ID", "PL_DAY_ID", "START_TIME", "END_TIME", "PL_LEG_ID"])

    resources = pd.DataFrame({
        "PL_SUBJ_ID": res_ids, "SPEC": res_spec, "BRANCH": res_branch, "ROOM": is_room,
        "MEDECINS_ID": np.where(is_room, -1, np.concatenate([doc_ids, np.zeros(n_branches, int)])),
        "FM_DEP_ID": [dep_id[(int(b), int(s))] for b, s in zip(res_branch, res_spec, strict=True)],
        "POPULARITY": rng.normal(0, 0.35, n_res),
        "NO_SMS": pl_subj["NO_SMS_NOTIFY"].to_numpy() == 1,
        "EXAM_FIRST": [exam_of_spec[s][0] for s in res_spec],
        "EXAM_REPEAT": [exam_of_spec[s][1] for s in res_spec],
    })
    # Departments whose visit record (MOTCONSU) is created when the booking is made.
    booking_mode_deps = {d for d in dep_id.values() if rng.random() < 0.3}
    resources["MC_AT_BOOKING"] = resources["FM_DEP_ID"].isin(booking_mode_deps)
    frames = {"FM_ORG": fm_org, "FM_DEP": fm_dep, "SPECIALISATION": specialisation, "MEDECINS": medecins,
              "MEDDEP": meddep, "PL_EXAM": pl_exam, "PL_LEG": pl_leg, "PL_AGEND": pl_agend, "PL_DAY": pl_day,
              "PL_INT": pl_int, "PL_SUBJ": pl_subj}
    return Clinic(frames, resources, registrars)


def _hhmm(minutes: int) -> int:
    return (minutes // 60) * 100 + minutes % 60


def _day_rules(rng, agend_ids, slot_min, weekly_slots, is_room, hire, leave, history_start, first_day,
               last_day, holidays: HolidayCalendar) -> tuple[list[dict], list[dict]]:
    """PL_DAY rules (weekly patterns, shift work on even/odd dates, holidays) and PL_INT lunch bands."""
    days: list[dict] = []
    bands: list[dict] = []
    holiday_days = sorted(d for d in holidays.holidays if first_day - 1 <= d <= last_day + 1)
    epoch = date(1970, 1, 1)

    def add_day(agend: int, **values: Any) -> int:
        rule_id = 10_000 + len(days)
        row = {"PL_DAY_ID": rule_id, "PL_AGEND_ID": agend, "NAME": None, "DAY_OF_WEEK": None, "DAY_EVEN": None,
               "DAY_OF_MONTH": None, "DAY_MONTH": None, "DAY_YEAR": None, "PERIOD_FROM": None, "PERIOD_TO": None,
               "START_TIME": None, "END_TIME": None, "ENABLED": 1, "DUREE_TRANCHE": None, "DAY_ORDER": 10}
        row.update(values)
        days.append(row)
        return rule_id

    def ts(day_no: int | None) -> datetime | None:
        return None if day_no is None else datetime.combine(epoch + timedelta(days=int(day_no)), datetime.min.time())

    for i, agend in enumerate(agend_ids):
        per_hour = 60 / slot_min[i]
        target = weekly_slots * (ROOM_LOAD if is_room[i] else float(np.exp(rng.normal(0, 0.25))))
        start_day = int(hire[i]) if i < len(hire) and hire[i] >= 0 else None
        end_day = int(leave[i]) if i < len(leave) and leave[i] >= 0 else None
        periods = [(start_day, end_day)]
        if rng.random() < 0.3:  # the schedule changes once during the history
            change = int(rng.integers(history_start + 120, last_day - 60))
            if (start_day is None or change > start_day + 30) and (end_day is None or change < end_day - 30):
                periods = [(start_day, change - 1), (change, end_day)]
        for p, (p_from, p_to) in enumerate(periods):
            order = 10 + 10 * p
            shift_work = not is_room[i] and rng.random() < 0.15
            if shift_work:  # even dates in the morning, odd dates in the afternoon, weekdays only
                hours = min(6.0, max(3.0, target / (5 * per_hour)))
                for even, start in ((1, 8 * 60), (0, 14 * 60)):
                    add_day(agend, NAME="Чётные" if even else "Нечётные", DAY_EVEN=even, START_TIME=_hhmm(start),
                            END_TIME=_hhmm(start + round(hours * 2) * 30), PERIOD_FROM=ts(p_from),
                            PERIOD_TO=ts(p_to), DAY_ORDER=order)
                for dow in (6, 7):
                    add_day(agend, NAME="Выходной", DAY_OF_WEEK=dow, ENABLED=0, PERIOD_FROM=ts(p_from),
                            PERIOD_TO=ts(p_to), DAY_ORDER=order + 1)
                continue
            n_days = int(np.clip(np.ceil(target / (per_hour * 8)), 1, 5))
            hours = float(np.clip(target / (n_days * per_hour), 2.0, 11.0))
            hours = round(hours * 2) / 2
            weekdays = sorted(rng.choice(np.arange(1, 6), n_days, replace=False).tolist())
            if n_days == 5 and rng.random() < 0.15:
                weekdays.append(6)  # also Saturdays
            starts = [8 * 60, 9 * 60, 10 * 60, 14 * 60] if hours <= 6 else [8 * 60, 9 * 60]
            start = int(rng.choice(starts))
            end = min(start + int(hours * 60), 21 * 60)
            for dow in weekdays:
                rule = add_day(agend, NAME=f"День недели {dow}", DAY_OF_WEEK=dow, START_TIME=_hhmm(start),
                               END_TIME=_hhmm(end if dow != 6 else min(end, start + 300)),
                               PERIOD_FROM=ts(p_from), PERIOD_TO=ts(p_to), DAY_ORDER=order)
                if end - start >= 6 * 60 and dow != 6:
                    lunch = start + ((end - start) // 2 // 60) * 60
                    bands.append({"PL_INT_ID": 50_000 + len(bands), "PL_DAY_ID": rule, "START_TIME": _hhmm(lunch),
                                  "END_TIME": _hhmm(lunch + 30), "PL_LEG_ID": LEG_BREAK})
        for d in holiday_days:
            day = epoch + timedelta(days=int(d))
            add_day(agend, NAME="Праздничный день", DAY_OF_MONTH=day.day, DAY_MONTH=day.month, DAY_YEAR=day.year,
                    ENABLED=0, DAY_ORDER=100)
    return days, bands


def _exclusions(rng: np.random.Generator, resources: pd.DataFrame, first_day: int, last_day: int) -> pd.DataFrame:
    """PL_EXCL: vacations (planned weeks ahead), sick leave (entered the evening before or that morning),
    half-day blocks. Non-overlapping per schedule. ``CREATED`` is when the row appears."""
    rows = []
    years = (last_day - first_day) / 365.25
    for subj, room in zip(resources["PL_SUBJ_ID"], resources["ROOM"], strict=True):
        items = []
        if not room:
            for _ in range(round(2 * years)):
                start = int(rng.integers(first_day, last_day))
                items.append((start, 1440, start + int(rng.choice([7, 14, 14, 21])) - 1, 2400, LEG_VACATION,
                              start * DAY - int(rng.integers(30, 120)) * DAY + int(rng.integers(9 * 60, 18 * 60))))
            for _ in range(rng.poisson(1.3 * years)):
                start = int(rng.integers(first_day, last_day))
                created = start * DAY - int(rng.integers(60, 180)) if rng.random() < 0.6 else (start - 1) * DAY + int(
                    rng.integers(18 * 60, 21 * 60))
                items.append((start, 0, start + int(rng.integers(3, 11)) - 1, 2400, LEG_SICK, created))
        for _ in range(rng.poisson(4 * years)):
            day = int(rng.integers(first_day, last_day))
            items.append((day, 1300, day, 1700, LEG_BLOCK, day * DAY - int(rng.integers(5, 30)) * DAY + 10 * 60))
        items.sort()
        last_end = -1
        for start, from_time, end, to_time, leg, created in items:
            if start <= last_end:
                continue
            last_end = end
            rows.append((subj, start, 0 if from_time == 1440 else from_time, end, to_time, leg, created))
    frame = pd.DataFrame(rows, columns=["PL_SUBJ_ID", "FROM_DAY", "FROM_TIME", "TO_DAY", "TO_TIME", "PL_LEG_ID",
                                        "CREATED"])
    frame = frame.sort_values("CREATED", kind="stable").reset_index(drop=True)
    frame.insert(0, "PL_EXCL_ID", 70_000 + np.arange(len(frame)))
    comments = {LEG_VACATION: "Отпуск", LEG_SICK: "Больничный лист", LEG_BLOCK: "Учёба"}
    frame["COMMENTAIRE"] = frame["PL_LEG_ID"].map(comments)
    return frame


def _exclusion_frame(excl: pd.DataFrame) -> pd.DataFrame:
    """The PL_EXCL table rows of ``_exclusions()`` output."""
    return pd.DataFrame({
        "PL_EXCL_ID": excl["PL_EXCL_ID"], "PL_SUBJ_ID": excl["PL_SUBJ_ID"],
        "FROM_DATE": _minutes_to_ts(excl["FROM_DAY"].to_numpy() * DAY), "FROM_TIME": excl["FROM_TIME"],
        "TO_DATE": _minutes_to_ts(excl["TO_DAY"].to_numpy() * DAY), "TO_TIME": excl["TO_TIME"],
        "PL_LEG_ID": excl["PL_LEG_ID"], "COMMENTAIRE": excl["COMMENTAIRE"],
        "KRN_CREATE_DATE": _minutes_to_ts(excl["CREATED"].to_numpy()),
        "KRN_MODIFY_DATE": _minutes_to_ts(excl["CREATED"].to_numpy()),
    })


# --------------------------------------------------------------------------------------------------
# patients


def _patients(cfg: GeneratorConfig, rng: np.random.Generator, n: int, today_no: int, history_start: int):
    male = rng.random(n) < 0.42
    child = rng.random(n) < 0.20
    age_today = np.where(child, rng.uniform(0, 18, n),
                         np.clip(rng.gamma(4.0, 7.5, n) + 17, 18, 96))  # adults: mean ≈ 47 years
    birth_day = (today_no - age_today * 365.25).astype(np.int64)
    activity = rng.gamma(0.7, 1.0, n) * np.where(age_today > 60, 1.6, 1.0)
    nom, prenom, patr = _fio(rng, male)
    phones = _phones(rng, n)
    # the most active patients get the known names and phones (so they surely have bookings)
    top = np.argsort(-activity, kind="stable")
    for i, full in enumerate(cfg.known_names):
        parts = full.split()
        nom[top[i]], prenom[top[i]] = parts[0], parts[1]
        patr[top[i]] = " ".join(parts[2:]) or None
    for i, phone in enumerate(cfg.known_phones):
        phones[top[i]] = phone
    return pd.DataFrame({
        "MALE": male, "CHILD": child, "BIRTH_DAY": birth_day, "ACTIVITY": activity,
        "U": rng.normal(0, EFFECTS.patient_sd, n) - 0.1 * np.log(activity + 0.1),
        "NOSMS": rng.random(n) < 0.06, "PHONE_OK": rng.random(n) < 0.93,
        "EXISTED": rng.random(n) < 0.55,  # registered before the history starts
        "REGISTERED": (history_start - rng.integers(30, 3000, n)) * DAY + rng.integers(9 * 60, 19 * 60, n),
        "NOM": nom, "PRENOM": prenom, "PATRONYME": patr, "TEL": phones,
        "RAB_TEL": np.where(rng.random(n) < 0.1, _phones(rng, n), None),
        "E_MAIL": np.where(rng.random(n) < 0.3, pd.Series(np.arange(n)).map(lambda i: f"patient{i}@example.ru"), None),
        "DOSSIER_EXIT": rng.random(n) < 0.01,
        "HAS_BIRTH_DATE": rng.random(n) < 0.92,
    })


# --------------------------------------------------------------------------------------------------
# bookings


@dataclass
class Bookings:
    """Column arrays of bookings (one entry per PLANNING row ever made)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["START"])

    def take(self, index: np.ndarray) -> Bookings:
        return Bookings({k: v[index] for k, v in self.cols.items()})

    @staticmethod
    def concat(parts: Sequence[Bookings]) -> Bookings:
        return Bookings({k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols})


def _draw(rng, clinic: Clinic, patients: pd.DataFrame, slot_res: np.ndarray, slot_start: np.ndarray,
          slot_duree: np.ndarray, cfg: GeneratorConfig, history_start: int, clock: int,
          patient: np.ndarray | None = None, booked: np.ndarray | None = None, channel: np.ndarray | None = None,
          kind: int = 0) -> Bookings:
    """Attributes of new bookings into the given slots (resource row index, start, length)."""
    n = len(slot_res)
    res = clinic.resources
    spec = res["SPEC"].to_numpy()[slot_res]
    start_day = slot_start // DAY
    minute = slot_start % DAY
    if patient is None:
        child_share = np.array([s.child_share for s in SPECIALTIES])[spec]
        want_child = rng.random(n) < child_share
        patient = np.empty(n, dtype=np.int64)
        for is_child in (False, True):
            pool = np.flatnonzero(patients["CHILD"].to_numpy() == is_child)
            chosen = want_child == is_child
            weights = patients["ACTIVITY"].to_numpy()[pool]
            patient[chosen] = rng.choice(pool, chosen.sum(), p=weights / weights.sum())
        # nobody is seen before they are born (+ a month): such bookings go to a child born by then
        birth = patients["BIRTH_DAY"].to_numpy()
        unborn = birth[patient] > start_day - 30
        if unborn.any():
            children = np.flatnonzero(patients["CHILD"].to_numpy())
            children = children[np.argsort(birth[children], kind="stable")]
            born = np.searchsorted(birth[children], start_day[unborn] - 30, side="right")
            pick = (rng.random(unborn.sum()) * np.maximum(born, 1)).astype(np.int64)
            patient[unborn] = children[np.minimum(pick, len(children) - 1)]
    if booked is None:
        same_day = rng.random(n) < np.array([s.same_day for s in SPECIALTIES])[spec]
        mean_lead = np.array([s.mean_lead_days for s in SPECIALTIES])[spec]
        lead_days = 1 + np.minimum(rng.gamma(1.1, np.maximum(mean_lead - 1, 0.5) / 1.1), cfg.max_lead_days - 1)
        lead_whole = np.floor(lead_days).astype(np.int64)
        t = (start_day - history_start) / max(1, clock // DAY - history_start)
        web_share = np.clip(0.12 + 0.18 * t, 0.05, 0.35)
        u = rng.random(n)
        channel = np.select([u < web_share, u < web_share + 0.03, u < web_share + 0.38, u < web_share + 0.48],
                            [CH_WEB, CH_HUB, CH_PHONE, CH_DOCTOR], default=CH_RECEPTION)
        channel = np.where((channel == CH_DOCTOR) & ((lead_days < 7) | res["ROOM"].to_numpy()[slot_res]), CH_PHONE,
                           channel)
        tod = np.where(channel == CH_WEB, rng.integers(7 * 60, 24 * 60, n), rng.integers(8 * 60, 20 * 60, n))
        booked = (start_day - lead_whole) * DAY + tod
        same_minutes = rng.integers(15, 6 * 60, n)
        booked = np.where(same_day, slot_start - np.minimum(same_minutes, np.maximum(minute - 7 * 60, 15)), booked)
        channel = np.where(same_day & (channel == CH_DOCTOR), CH_RECEPTION, channel)
        booked = np.minimum(booked, slot_start - 10)
    assert channel is not None
    branch = res["BRANCH"].to_numpy()[slot_res]
    creator = np.select(
        [channel == CH_WEB, channel == CH_HUB, channel == CH_PHONE, channel == CH_DOCTOR],
        [USER_WEB, USER_HUB, np.asarray(CALL_CENTRE_USERS)[rng.integers(0, len(CALL_CENTRE_USERS), n)],
         res["MEDECINS_ID"].to_numpy()[slot_res]],
        default=0,
    )
    table = np.zeros((int(res["BRANCH"].max()) + 1, 2), dtype=np.int64)
    for b_id, ids in clinic.registrars.items():
        table[b_id] = ids
    registrar = table[branch, rng.integers(0, 2, n)]
    creator = np.where(creator == 0, registrar, creator)
    unconfirmed = (channel == CH_WEB) | (channel == CH_HUB)
    confirm = np.where(unconfirmed & (rng.random(n) < 0.75), booked + rng.integers(30, 36 * 60, n), NEVER)
    confirm = np.where(confirm >= slot_start - 30, NEVER, confirm)
    return Bookings({
        "RES": slot_res.astype(np.int64), "START": slot_start.astype(np.int64), "DUREE": slot_duree.astype(np.int64),
        "PATIENT": patient.astype(np.int64), "BOOKED": booked.astype(np.int64), "CHANNEL": channel.astype(np.int64),
        "CREATOR": creator.astype(np.int64), "REGISTRAR": registrar.astype(np.int64),
        "NA0": unconfirmed.astype(np.int64), "CONFIRM": confirm.astype(np.int64),
        "CANCEL": np.full(n, NEVER), "CANCEL_KIND": np.zeros(n, np.int64), "DELETE": np.full(n, NEVER),
        "HARD_DELETE": np.full(n, NEVER), "SOURCE": np.full(n, -1, np.int64), "KIND": np.full(n, kind, np.int64),
        "EXCL": np.full(n, -1, np.int64),
    })


def _cancellations(rng, b: Bookings, patients: pd.DataFrame, cfg: GeneratorConfig, rate: float) -> None:
    """Patient cancellations of not-yet-cancelled bookings (more likely for long leads and unreliable
    patients), at a time skewed towards the appointment."""
    c = b.cols
    lead = (c["START"] - c["BOOKED"]) / DAY
    logit = 0.30 * np.log1p(lead) + 0.45 * patients["U"].to_numpy()[c["PATIENT"]] + 0.2 * (c["CHANNEL"] == CH_WEB)
    open_ = (c["CANCEL"] == NEVER) & (c["DELETE"] == NEVER)
    if rate <= 0 or not open_.any():
        return
    p = sigmoid(solve_intercept(logit[open_], rate) + logit)
    cancel = open_ & (rng.random(len(b)) < p)
    at = c["BOOKED"] + ((c["START"] - c["BOOKED"]) * rng.beta(2.0, 0.9, len(b))).astype(np.int64)
    at = np.clip(at, c["BOOKED"] + 5, c["START"] - 15)
    ok = cancel & (at > c["BOOKED"])
    c["CANCEL"] = np.where(ok, at, c["CANCEL"])
    c["CANCEL_KIND"] = np.where(ok, 1, c["CANCEL_KIND"])


class FreeSlots:
    """Grid slots no final booking occupies and no exception covers, for reschedules."""

    def __init__(self, res: np.ndarray, start: np.ndarray, duree: np.ndarray) -> None:
        order = np.lexsort((start, res))
        self.res, self.start, self.duree = res[order], start[order], duree[order]
        self.keys = self.res * grid._SHIFT + self.start
        self.taken = np.zeros(len(order), dtype=bool)

    def claim(self, rng, res: np.ndarray, earliest: np.ndarray, latest: np.ndarray) -> np.ndarray:
        """For each request the index of a free slot of ``res`` in [earliest, latest], else -1.

        Requests are served in random order; two requests never get the same slot.
        """
        result = np.full(len(res), -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, res * grid._SHIFT + earliest, side="left")
        active = rng.permutation(len(res))
        for _ in range(12):
            if len(active) == 0:
                break
            p = pos[active]
            inside = p < len(self.keys)
            active, p = active[inside], p[inside]
            fits = (self.res[p] == res[active]) & (self.start[p] <= latest[active])
            active, p = active[fits], p[fits]  # no slot left in the range: the request fails
            free = ~self.taken[p]
            slots, first = np.unique(p[free], return_index=True)
            winners = active[free][first]
            result[winners] = slots
            self.taken[slots] = True
            won = np.zeros(len(res), dtype=bool)
            won[winners] = True
            active = active[~won[active]]
            pos[active] += 1
        return result


def _reschedule(rng, b: Bookings, sources: np.ndarray, free: FreeSlots, clinic: Clinic, patients, cfg,
                history_start: int, clock: int, earliest: np.ndarray, kind: int) -> Bookings:
    """New bookings for the given cancelled bookings (same patient and schedule, a free slot)."""
    c = b.cols
    res = c["RES"][sources]
    latest = earliest + 35 * DAY
    slot = free.claim(rng, res, earliest, latest)
    ok = slot >= 0
    src = sources[ok]
    slot = slot[ok]
    booked = c["CANCEL"][src] + 1
    new = _draw(rng, clinic, patients, free.res[slot], free.start[slot], free.duree[slot], cfg, history_start, clock,
                patient=c["PATIENT"][src], booked=booked,
                channel=np.where(rng.random(len(src)) < 0.6, CH_PHONE, CH_RECEPTION), kind=kind)
    new.cols["SOURCE"] = src
    return new


def _soft_and_hard_deletes(rng, b: Bookings, cfg: GeneratorConfig) -> None:
    c = b.cols
    n = len(b)
    soft = (c["CANCEL"] == NEVER) & (rng.random(n) < cfg.soft_delete_rate)
    at = np.minimum(c["BOOKED"] + rng.integers(1, 180, n), c["START"] - 1)
    c["DELETE"] = np.where(soft & (at > c["BOOKED"]), at, c["DELETE"])
    hard = rng.random(n) < cfg.hard_delete_rate
    span = np.maximum(c["START"] + 3 * DAY - c["BOOKED"], 2)
    c["HARD_DELETE"] = np.where(hard, c["BOOKED"] + 1 + (rng.random(n) * span).astype(np.int64), NEVER)


def _apply_exclusions(rng, b: Bookings, excl: pd.DataFrame) -> np.ndarray:
    """Bookings inside leave: those made before the leave was entered are cancelled by the clinic;
    those made after cannot exist. Returns the mask of bookings to keep."""
    c = b.cols
    intervals = pd.DataFrame({
        "PL_SUBJ_ID": excl["RES"].to_numpy(), "FROM_MIN": excl["FROM_MIN"].to_numpy(),
        "TO_MIN": excl["TO_MIN"].to_numpy(),
    })
    hit = grid.covered_by(c["RES"], c["START"], c["START"] + c["DUREE"], intervals)
    covered = hit >= 0
    created = np.where(covered, excl["CREATED"].to_numpy()[np.maximum(hit, 0)], NEVER)
    impossible = covered & (c["BOOKED"] >= created)
    ended = np.minimum(np.minimum(c["CANCEL"], c["DELETE"]), c["HARD_DELETE"])
    moved = np.zeros(len(b), dtype=bool)  # already rescheduled by the patient: that cancellation stands
    moved[c["SOURCE"][c["SOURCE"] >= 0]] = True
    cancel_now = covered & ~impossible & (ended > created) & (created < c["START"]) & ~moved
    at = np.minimum(created + rng.integers(5, 240, len(b)), c["START"] - 5)
    c["CANCEL"] = np.where(cancel_now, at, c["CANCEL"])
    c["CANCEL_KIND"] = np.where(cancel_now, 2, c["CANCEL_KIND"])
    c["EXCL"] = np.where(covered, hit, -1)
    c["DELETE"] = np.where(cancel_now, NEVER, c["DELETE"])
    return ~impossible


def _drop(b: Bookings, keep: np.ndarray) -> Bookings:
    """Remove bookings, re-pointing SOURCE links (a link to a removed booking becomes -1)."""
    new_index = np.cumsum(keep) - 1
    out = b.take(np.flatnonzero(keep))
    src = out.cols["SOURCE"]
    valid = src >= 0
    src_kept = np.zeros(len(src), dtype=bool)
    src_kept[valid] = keep[src[valid]]
    out.cols["SOURCE"] = np.where(valid & src_kept, new_index[np.maximum(src, 0)], -1)
    return out


# --------------------------------------------------------------------------------------------------
# the whole timeline


@dataclass
class Timeline:
    bookings: Bookings
    patients: pd.DataFrame
    clinic: Clinic
    exclusions: pd.DataFrame
    stats: dict[str, Any]


def _minutes_to_ts(minutes: np.ndarray) -> np.ndarray:
    m = np.asarray(minutes, dtype=np.int64)
    out = (m * 60).astype("datetime64[s]")
    return np.where(m >= NEVER, np.datetime64("NaT"), out)


def build_timeline(cfg: GeneratorConfig) -> Timeline:
    """Draw the clinic and every booking's life (deterministic for a config)."""
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    today_no = grid.day_number(cfg.today)
    clock = today_no * DAY
    history_start = today_no - cfg.history_days
    horizon_end = today_no + cfg.horizon_days
    grid_end = horizon_end + cfg.max_lead_days
    epoch_year = date(1970, 1, 1)
    holidays = HolidayCalendar.for_years((epoch_year + timedelta(days=history_start)).year,
                                         (epoch_year + timedelta(days=grid_end)).year)
    doctors = _doctor_count(cfg.appointments)
    target = cfg.appointments * 1.06  # overshoot a little, thinned to the exact count below
    per_slot = 1 + cfg.prior_cancel_rate / (1 - cfg.prior_cancel_rate) + 0.03  # bookings per occupied slot
    occupancy_goal = 0.82
    schedules = doctors + ROOM_LOAD * _branch_count(cfg)
    # weekly grid slots per schedule; 0.85: holidays, lunch breaks and shift work take part of the week
    weekly = target / per_slot / occupancy_goal / 0.85 / schedules / (cfg.history_days / 7)

    for attempt in range(6):
        clinic_rng = np.random.default_rng([cfg.seed, 1, attempt])
        clinic = _build_clinic(cfg, clinic_rng, doctors, weekly, history_start - 30, grid_end, history_start, holidays)
        slots = grid.expand_slots(
            grid.resolve_days(clinic.frames["PL_DAY"], clinic.frames["PL_AGEND"],
                              epoch_year + timedelta(days=history_start), epoch_year + timedelta(days=grid_end)),
            clinic.frames["PL_SUBJ"], clinic.frames["PL_INT"])
        res_index = pd.Series(np.arange(len(clinic.resources)), index=clinic.resources["PL_SUBJ_ID"])
        slot_res = res_index.loc[slots["PL_SUBJ_ID"].to_numpy()].to_numpy()
        slot_start = slots["START_MIN"].to_numpy(dtype=np.int64)
        past = slot_start < clock
        demand = _demand(clinic, slot_res, slot_start, history_start, today_no)
        needed = target / per_slot
        ratio = needed / max(past.sum(), 1)
        a = solve_intercept(demand[past], min(0.97, ratio))
        occupancy = np.minimum(sigmoid(a + demand), 0.97)
        if ratio > 0.9:  # the grid is too small for the demand: add doctors
            doctors = int(np.ceil(doctors * ratio / occupancy_goal))
        elif ratio < 0.74 and attempt < 5:  # too much capacity: shorter working weeks
            weekly *= ratio / occupancy_goal
        else:
            break
    if occupancy[past].sum() < 0.97 * needed:  # pragma: no cover - the loop always makes room
        raise ClinicFlowError("could not build a slot grid large enough for the requested appointments")

    excl = _exclusions(rng, clinic.resources, history_start - 30, grid_end)
    excl_iv = grid.exclusion_intervals(pd.DataFrame({
        "PL_SUBJ_ID": excl["PL_SUBJ_ID"], "FROM_DATE": _minutes_to_ts(excl["FROM_DAY"].to_numpy() * DAY),
        "FROM_TIME": excl["FROM_TIME"], "TO_DATE": _minutes_to_ts(excl["TO_DAY"].to_numpy() * DAY),
        "TO_TIME": excl["TO_TIME"], "PL_EXCL_ID": excl["PL_EXCL_ID"], "PL_LEG_ID": excl["PL_LEG_ID"]}))
    excl_iv = excl_iv.assign(RES=res_index.loc[excl_iv["PL_SUBJ_ID"].to_numpy()].to_numpy(),
                             CREATED=excl.set_index("PL_EXCL_ID").loc[excl_iv["PL_EXCL_ID"], "CREATED"].to_numpy())
    excl_iv["PL_SUBJ_ID"] = excl_iv["RES"]

    n_patients = max(200, int(cfg.appointments / 3.6))
    patients = _patients(cfg, np.random.default_rng([cfg.seed, 2]), n_patients, today_no, history_start)

    # 1. Final bookings: one per occupied slot.
    occupied = rng.random(len(slot_start)) < occupancy
    slot_duree = slots["DUREE"].to_numpy(dtype=np.int64)
    finals = _draw(rng, clinic, patients, slot_res[occupied], slot_start[occupied], slot_duree[occupied], cfg,
                   history_start, clock)
    # 2. Earlier bookings of the same slot, cancelled (or deleted) before the final one was made.
    priors = _priors(rng, clinic, patients, finals, cfg, history_start, clock)
    _cancellations(rng, finals, patients, cfg, cfg.cancel_rate)
    _soft_and_hard_deletes(rng, finals, cfg)
    all_b = Bookings.concat([finals, priors])
    # 3. Patient reschedules into free slots of the same schedule.
    covered = grid.covered_by(slot_res, slot_start, slot_start + slot_duree, excl_iv) >= 0
    free = FreeSlots(slot_res[~occupied & ~covered], slot_start[~occupied & ~covered], slot_duree[~occupied & ~covered])
    c = all_b.cols
    can = np.flatnonzero((c["CANCEL_KIND"] == 1) & (c["CANCEL"] < NEVER))
    movers = can[rng.random(len(can)) < cfg.reschedule_share]
    moved = _reschedule(rng, all_b, movers, free, clinic, patients, cfg, history_start, clock,
                        earliest=c["CANCEL"][movers] + DAY + rng.integers(0, 14 * DAY, len(movers)), kind=2)
    _cancellations(rng, moved, patients, cfg, cfg.cancel_rate * 0.7)
    _soft_and_hard_deletes(rng, moved, cfg)
    all_b = Bookings.concat([all_b, moved])
    # 4. Leave: the clinic cancels what was booked before the leave was entered, and moves half of it.
    keep = _apply_exclusions(rng, all_b, excl_iv)
    all_b = _drop(all_b, keep)
    c = all_b.cols
    clinic_cancelled = np.flatnonzero(c["CANCEL_KIND"] == 2)
    movers = clinic_cancelled[rng.random(len(clinic_cancelled)) < 0.5]
    excl_end = excl_iv["TO_MIN"].to_numpy()[c["EXCL"][movers]]
    moved = _reschedule(rng, all_b, movers, free, clinic, patients, cfg, history_start, clock,
                        earliest=np.maximum(excl_end, c["CANCEL"][movers] + DAY)
                        + rng.integers(0, 7 * DAY, len(movers)),
                        kind=3)
    _soft_and_hard_deletes(rng, moved, cfg)
    all_b = Bookings.concat([all_b, moved])
    keep = _apply_exclusions(rng, all_b, excl_iv)  # a reschedule may land in other leave
    all_b = _drop(all_b, keep)
    # 5. Bookings beyond the simulation horizon do not exist yet.
    all_b = _drop(all_b, all_b.cols["BOOKED"] < horizon_end * DAY)
    # 6. Thin past bookings to exactly the requested count of PLANNING rows at the clock.
    all_b = _thin(rng, all_b, cfg.appointments, clock)
    stats = {"doctors": int((~clinic.resources["ROOM"]).sum()), "rooms": int(clinic.resources["ROOM"].sum()),
             "grid_slots_past": int(past.sum()), "occupancy_past": float(occupancy[past].mean())}
    tl = Timeline(all_b, patients, clinic, excl.assign(RES=res_index.loc[excl["PL_SUBJ_ID"].to_numpy()].to_numpy()),
                  stats)
    _outcomes(np.random.default_rng([cfg.seed, 3]), tl, cfg, holidays, history_start, clock)
    return tl


def _demand(clinic: Clinic, slot_res: np.ndarray, slot_start: np.ndarray, history_start: int,
            today_no: int) -> np.ndarray:
    """Relative demand for a slot (log-odds of being booked): doctor popularity, weekday, hour,
    season and a slowly growing clinic."""
    day = slot_start // DAY
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    hour = (slot_start % DAY) // 60
    month = pd.to_datetime(day, unit="D").month.to_numpy()
    season = np.array([-0.3, 0.0, 0.1, 0.1, -0.1, -0.2, -0.3, -0.25, 0.15, 0.2, 0.2, 0.05])[month - 1]
    weekday_d = np.array([0.25, 0.1, 0.05, 0.0, -0.05, -0.2, -0.5])[weekday]
    hour_d = np.where((hour >= 10) & (hour < 13), 0.15, 0.0) + np.where(hour >= 18, 0.1, 0.0)
    growth = 0.25 * (day - history_start) / max(1, today_no - history_start)
    return clinic.resources["POPULARITY"].to_numpy()[slot_res] + season + weekday_d + hour_d + growth


def _priors(rng, clinic, patients, finals: Bookings, cfg: GeneratorConfig, history_start, clock) -> Bookings:
    """Chains of earlier bookings of a final booking's slot, each cancelled before the next was made."""
    f = finals.cols
    count = np.minimum(rng.geometric(1 - cfg.prior_cancel_rate, len(finals)) - 1, 3)
    parts = []
    next_booked = f["BOOKED"].copy()
    for level in range(1, 4):
        idx = np.flatnonzero(count >= level)
        if len(idx) == 0:
            break
        gap = (rng.exponential(6 * DAY, len(idx)) + 60).astype(np.int64)
        booked = next_booked[idx] - gap
        ok = (f["START"][idx] - booked) <= cfg.max_lead_days * DAY
        idx, booked = idx[ok], booked[ok]
        drawn = _draw(rng, clinic, patients, f["RES"][idx], f["START"][idx], f["DUREE"][idx], cfg, history_start,
                      clock, booked=booked, channel=rng.choice([CH_PHONE, CH_RECEPTION, CH_WEB], len(idx)), kind=1)
        span = next_booked[idx] - booked
        cancel = booked + np.maximum((span * rng.uniform(0.3, 0.98, len(idx))).astype(np.int64), 1)
        delete = rng.random(len(idx)) < 0.1
        drawn.cols["CANCEL"] = np.where(delete, NEVER, cancel)
        drawn.cols["CANCEL_KIND"] = np.where(delete, 0, 1)
        drawn.cols["DELETE"] = np.where(delete, cancel, NEVER)
        drawn.cols["HARD_DELETE"] = np.where(rng.random(len(idx)) < cfg.hard_delete_rate,
                                             cancel + rng.integers(1, 10 * DAY, len(idx)), NEVER)
        parts.append(drawn)
        next_booked[idx] = booked
    if not parts:
        return finals.take(np.zeros(0, dtype=np.int64))
    return Bookings.concat(parts)


def _thin(rng, b: Bookings, wanted: int, clock: int) -> Bookings:
    """Drop random past bookings (not linked by a reschedule) until exactly ``wanted`` are visible."""
    c = b.cols
    visible = (c["BOOKED"] < clock) & (c["HARD_DELETE"] >= clock)
    have = int(visible.sum())
    if have <= wanted:
        if have < wanted:
            log.warning("generated %d appointments, fewer than the %d asked for", have, wanted)
        return b
    linked = np.zeros(len(b), dtype=bool)
    linked[c["SOURCE"][c["SOURCE"] >= 0]] = True
    linked |= c["SOURCE"] >= 0
    candidates = np.flatnonzero(visible & ~linked & (c["START"] < clock))
    drop = rng.choice(candidates, size=min(have - wanted, len(candidates)), replace=False)
    keep = np.ones(len(b), dtype=bool)
    keep[drop] = False
    return _drop(b, keep)


def _outcomes(rng, tl: Timeline, cfg: GeneratorConfig, holidays: HolidayCalendar, history_start: int,
              clock: int) -> None:
    """Ids, reminders, the true no-show probability, outcomes and the evidence of attendance."""
    b, c, res, pts = tl.bookings, tl.bookings.cols, tl.clinic.resources, tl.patients
    n = len(b)
    # Ids in order of creation, as an identity column would give them.
    order = np.lexsort((c["START"], c["BOOKED"]))
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    for key in list(c):
        c[key] = c[key][order]
    c["SOURCE"] = np.where(c["SOURCE"] >= 0, inverse[np.maximum(c["SOURCE"], 0)], -1)
    c["PLANNING_ID"] = 100_001 + np.arange(n)
    c["SOURCE_PLANNING_ID"] = np.where(c["SOURCE"] >= 0, c["PLANNING_ID"][np.maximum(c["SOURCE"], 0)], -1)
    c["LEGACY"] = (c["BOOKED"] < (history_start + int(cfg.history_days * 0.35)) * DAY).astype(np.int64)

    day = c["START"] // DAY
    minute = c["START"] % DAY
    branch = res["BRANCH"].to_numpy()[c["RES"]]
    # Reminders: the SMS robot sends them the day before, from a per-branch roll-out date on.
    branch_ids = np.sort(res["BRANCH"].unique())
    rollout = np.zeros(int(branch_ids.max()) + 1, dtype=np.int64)
    rollout[branch_ids] = history_start + (cfg.history_days * np.linspace(0.30, 0.70, len(branch_ids))).astype(int)
    send = (day - 1) * DAY + 11 * 60 + rng.integers(0, 180, n)
    enabled = send // DAY >= rollout[branch]
    ended = np.minimum(np.minimum(c["CANCEL"], c["DELETE"]), c["HARD_DELETE"])
    eligible = (enabled & ~pts["NOSMS"].to_numpy()[c["PATIENT"]] & ~res["NO_SMS"].to_numpy()[c["RES"]]
                & (c["BOOKED"] < send) & (ended > send))
    delivered = eligible & pts["PHONE_OK"].to_numpy()[c["PATIENT"]]
    c["SMS_AT"] = np.where(eligible, send, NEVER)
    c["SMS_OK"] = delivered.astype(np.int64)
    confirm_sms = (c["CHANNEL"] == CH_WEB) & (c["BOOKED"] // DAY >= rollout[branch]) & ~pts["NOSMS"].to_numpy()[
        c["PATIENT"]]
    c["SMS2_AT"] = np.where(confirm_sms, c["BOOKED"] + 1, NEVER)

    # The true probability of a no-show (if the booking is kept).
    birth = pts["BIRTH_DAY"].to_numpy()[c["PATIENT"]]
    age = (day - birth) / 365.25
    kept = (c["CANCEL"] == NEVER) & (c["DELETE"] == NEVER) & (c["HARD_DELETE"] > c["START"])
    first_kept = _first_per_patient(c["PATIENT"], c["START"], kept)
    new_patient = first_kept & ~pts["EXISTED"].to_numpy()[c["PATIENT"]]
    channel_effect = np.array([EFFECTS.channel[ch] for ch in CHANNELS])[c["CHANNEL"]]
    spec_effect = np.array([s.effect for s in SPECIALTIES])[res["SPEC"].to_numpy()[c["RES"]]]
    logit = noshow_logit(
        lead_days=(c["START"] - c["BOOKED"]) / DAY, patient_effect=pts["U"].to_numpy()[c["PATIENT"]],
        new_patient=new_patient.astype(float), age=age, male=pts["MALE"].to_numpy()[c["PATIENT"]].astype(float),
        weekday=(day + 3) % 7, minute_of_day=minute, month=pd.to_datetime(day, unit="D").month.to_numpy(),
        holiday_effect=holidays.effect(day), reminder=delivered.astype(float),
        unconfirmed=((c["NA0"] == 1) & (c["CONFIRM"] >= c["START"])).astype(float),
        rescheduled=(c["SOURCE"] >= 0).astype(float), channel_effect=channel_effect, specialty_effect=spec_effect,
    )
    past_kept = kept & (c["START"] < clock)
    intercept = solve_intercept(logit[past_kept], cfg.noshow_rate)
    p = sigmoid(intercept + logit)
    noshow = rng.random(n) < p
    show = kept & ~noshow
    c["P"] = p
    c["NOSHOW"] = noshow.astype(np.int64)
    c["KEPT"] = kept.astype(np.int64)

    # Evidence of attendance: the arrival mark (reception's diligence varies by branch), the visit
    # record (MOTCONSU, created at the visit or already at booking) and the bill.
    reliability = np.zeros(int(branch_ids.max()) + 1)
    reliability[branch_ids] = np.linspace(0.95, 0.55, len(branch_ids))
    mark = (show & (rng.random(n) < reliability[branch])) | (kept & noshow & (rng.random(n) < 0.003))
    c["ARRIVE"] = np.where(mark, c["START"] + np.where(rng.random(n) < 0.85, -rng.integers(0, 25, n),
                                                        rng.integers(0, 15, n)), NEVER)
    at_booking = res["MC_AT_BOOKING"].to_numpy()[c["RES"]]
    mc_exists = at_booking | (show & (rng.random(n) < 0.985))
    c["MC_CREATE"] = np.where(at_booking, c["BOOKED"], np.where(mc_exists, c["START"] + rng.integers(0, 20, n), NEVER))
    written = show & mc_exists
    c["MC_MODIFY"] = np.where(written, c["START"] + c["DUREE"] + rng.integers(-5, 25, n), NEVER)
    touched_noshow = at_booking & kept & noshow & (rng.random(n) < 0.02)
    c["MC_MODIFY"] = np.where(touched_noshow, c["START"] + rng.integers(60, 300, n), c["MC_MODIFY"])
    c["MC_MODIFY2"] = np.where(written & (rng.random(n) < 0.08), c["START"] + rng.integers(1, 20, n) * DAY, NEVER)
    ended_at = np.minimum(c["CANCEL"], c["DELETE"])
    c["MC_DELETE"] = np.where(at_booking & (ended_at < NEVER), ended_at,
                              np.where(at_booking & kept & noshow & (rng.random(n) < 0.10),
                                       c["START"] + rng.integers(1, 4, n) * DAY, NEVER))
    c["MC_LINKED"] = (at_booking | (rng.random(n) < 0.8)).astype(np.int64)
    is_room = res["ROOM"].to_numpy()[c["RES"]]
    bill = show & (rng.random(n) < np.where(is_room, 0.95, 0.85))
    c["BILL_AT"] = np.where(bill, c["START"] + c["DUREE"] + rng.integers(0, 40, n), NEVER)
    c["TOUCH"] = np.where(kept & (rng.random(n) < np.where(noshow, 0.25, 0.3)),
                          c["START"] + rng.integers(0, 8 * 60, n), NEVER)
    c["COMMENT_PHONE"] = (rng.random(n) < 0.06).astype(np.int64)
    c["MOTIF"] = rng.integers(0, len(_MOTIFS), n)
    first_in_spec = _first_per_patient(c["PATIENT"] * 100 + res["SPEC"].to_numpy()[c["RES"]], c["START"],
                                       np.ones(n, bool))
    c["PL_EXAM_ID"] = np.where(first_in_spec, res["EXAM_FIRST"].to_numpy()[c["RES"]],
                               res["EXAM_REPEAT"].to_numpy()[c["RES"]])
    # Child ids, in order of creation.
    for key, at in (("MC_ID", c["MC_CREATE"]), ("BILL_ID", c["BILL_AT"]), ("SMS_ID", c["SMS_AT"]),
                    ("SMS2_ID", c["SMS2_AT"])):
        exists = at < NEVER
        ids = np.full(n, -1, dtype=np.int64)
        rank = np.argsort(at[exists], kind="stable")
        ids_exist = np.empty(exists.sum(), dtype=np.int64)
        ids_exist[rank] = np.arange(exists.sum())
        ids[exists] = ids_exist
        c[key] = ids
    c["SMS2_ID"] = np.where(c["SMS2_ID"] >= 0, c["SMS2_ID"] + int((c["SMS_AT"] < NEVER).sum()), -1)
    c["MC_ID"] = np.where(c["MC_ID"] >= 0, c["MC_ID"] + 400_001, -1)
    c["BILL_ID"] = np.where(c["BILL_ID"] >= 0, c["BILL_ID"] + 900_001, -1)
    c["SMS_ID"] = np.where(c["SMS_ID"] >= 0, c["SMS_ID"] + 1, -1)
    c["SMS2_ID"] = np.where(c["SMS2_ID"] >= 0, c["SMS2_ID"] + 1, -1)

    # Patients: ids in order of registration; a patient new to the clinic registers with the first booking.
    first_booked = pd.Series(c["BOOKED"]).groupby(c["PATIENT"]).min()
    registered = pts["REGISTERED"].to_numpy().copy()
    used = np.zeros(len(pts), dtype=bool)
    used[first_booked.index.to_numpy()] = True
    new = ~pts["EXISTED"].to_numpy() & used
    fb = np.full(len(pts), NEVER)
    fb[first_booked.index.to_numpy()] = first_booked.to_numpy()
    registered = np.where(new, fb - rng.integers(1, 10, len(pts)), registered)
    keep_patient = pts["EXISTED"].to_numpy() | used
    pts["REGISTERED"] = registered
    pts["KEEP"] = keep_patient
    reg_order = np.argsort(np.where(keep_patient, registered, NEVER), kind="stable")
    pid = np.empty(len(pts), dtype=np.int64)
    pid[reg_order] = 10_001 + np.arange(len(pts))
    pts["PATIENTS_ID"] = pid

    past = c["START"] < clock
    tl.stats.update({
        "bookings_total": int(n),
        "true_noshow_rate_past_kept": float(noshow[past_kept].mean()) if past_kept.any() else None,
        "truth_auc_past": auc(p[past_kept], noshow[past_kept]),
        "cancelled_share_past": float((c["CANCEL"][past] < NEVER).mean()) if past.any() else None,
        "reschedules": int((c["SOURCE"] >= 0).sum()),
        "reminders_delivered_share_past_kept": float(delivered[past_kept].mean()) if past_kept.any() else None,
        "intercept": float(intercept),
    })


def _first_per_patient(key: np.ndarray, time_: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """True for the earliest masked entry of each key."""
    out = np.zeros(len(key), dtype=bool)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    order = idx[np.lexsort((time_[idx], key[idx]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    out[order[first]] = True
    return out


# --------------------------------------------------------------------------------------------------
# the state of the timeline at the clock

#: Columns of CLINICFLOW_TIMELINE (int64): everything needed to show a booking at any clock.
TIMELINE_COLUMNS = (
    "PLANNING_ID", "PL_SUBJ_ID", "START", "DUREE", "PATIENTS_ID", "PL_EXAM_ID", "SOURCE_PLANNING_ID", "CREATOR",
    "REGISTRAR", "LEGACY", "NA0", "BOOKED", "CONFIRM", "CANCEL", "DELETE", "HARD_DELETE", "ARRIVE", "TOUCH",
    "MC_ID", "MC_CREATE", "MC_MODIFY", "MC_MODIFY2", "MC_DELETE", "MC_LINKED", "MC_DOCTOR", "MC_DEP",
    "BILL_ID", "BILL_AT", "BILL_DOCTOR", "BRANCH", "SMS_ID", "SMS_AT", "SMS_OK", "SMS2_ID", "SMS2_AT",
    "COMMENT_PHONE", "MOTIF",
)
EVENT_COLUMNS = ("BOOKED", "CONFIRM", "CANCEL", "DELETE", "HARD_DELETE", "ARRIVE", "TOUCH", "MC_CREATE",
                 "MC_MODIFY", "MC_MODIFY2", "MC_DELETE", "BILL_AT", "SMS_AT", "SMS2_AT")
PLANNING_EVENTS = ("BOOKED", "CONFIRM", "CANCEL", "DELETE", "HARD_DELETE", "ARRIVE", "TOUCH")
MOTCONSU_EVENTS = ("MC_CREATE", "MC_MODIFY", "MC_MODIFY2", "MC_DELETE")


def timeline_frame(tl: Timeline) -> pd.DataFrame:
    c, res = tl.bookings.cols, tl.clinic.resources
    room = res["ROOM"].to_numpy()[c["RES"]]
    doctor = res["MEDECINS_ID"].to_numpy()[c["RES"]]
    return pd.DataFrame({
        "PLANNING_ID": c["PLANNING_ID"], "PL_SUBJ_ID": res["PL_SUBJ_ID"].to_numpy()[c["RES"]], "START": c["START"],
        "DUREE": c["DUREE"], "PATIENTS_ID": tl.patients["PATIENTS_ID"].to_numpy()[c["PATIENT"]],
        "PL_EXAM_ID": c["PL_EXAM_ID"], "SOURCE_PLANNING_ID": c["SOURCE_PLANNING_ID"], "CREATOR": c["CREATOR"],
        "REGISTRAR": c["REGISTRAR"], "LEGACY": c["LEGACY"], "NA0": c["NA0"], "BOOKED": c["BOOKED"],
        "CONFIRM": c["CONFIRM"], "CANCEL": c["CANCEL"], "DELETE": c["DELETE"], "HARD_DELETE": c["HARD_DELETE"],
        "ARRIVE": c["ARRIVE"], "TOUCH": c["TOUCH"], "MC_ID": c["MC_ID"], "MC_CREATE": c["MC_CREATE"],
        "MC_MODIFY": c["MC_MODIFY"], "MC_MODIFY2": c["MC_MODIFY2"], "MC_DELETE": c["MC_DELETE"],
        "MC_LINKED": c["MC_LINKED"], "MC_DOCTOR": np.where(room, -1, doctor),
        "MC_DEP": res["FM_DEP_ID"].to_numpy()[c["RES"]], "BILL_ID": c["BILL_ID"], "BILL_AT": c["BILL_AT"],
        "BILL_DOCTOR": np.where(room, -1, doctor), "BRANCH": res["BRANCH"].to_numpy()[c["RES"]],
        "SMS_ID": c["SMS_ID"], "SMS_AT": c["SMS_AT"], "SMS_OK": c["SMS_OK"], "SMS2_ID": c["SMS2_ID"],
        "SMS2_AT": c["SMS2_AT"], "COMMENT_PHONE": c["COMMENT_PHONE"], "MOTIF": c["MOTIF"],
    })


def _before(values: pd.Series | np.ndarray, clock: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64) < clock


def _ts(values: np.ndarray, happened: np.ndarray) -> np.ndarray:
    return _minutes_to_ts(np.where(happened, values, NEVER))


def _flag(value: np.ndarray, legacy: np.ndarray) -> pd.array:
    """0/1 flags; old rows (written by an older Medialog version) keep NULL instead of 0."""
    out = pd.array(value.astype(np.int64), dtype="Int64")
    out[(value == 0) & (legacy == 1)] = pd.NA
    return out


def _ids(values: np.ndarray) -> pd.array:
    out = pd.array(np.asarray(values, dtype=np.int64), dtype="Int64")
    out[np.asarray(values) < 0] = pd.NA
    return out


def materialise(t: pd.DataFrame, clock: int, people: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The Medialog rows of timeline ``t`` as they are at ``clock`` (minutes).

    ``people`` is indexed by PATIENTS_ID with NOM, PRENOM, PATRONYME, TEL (copied into PLANNING and
    SMS_MESSAGES as Medialog does).
    """
    visible = _before(t["BOOKED"], clock) & ~_before(t["HARD_DELETE"], clock)
    p = t[visible]
    legacy = p["LEGACY"].to_numpy()
    happened = {k: _before(p[k], clock) for k in PLANNING_EVENTS}
    modified = np.max(np.stack([np.where(happened[k], p[k].to_numpy(), -1) for k in PLANNING_EVENTS]), axis=0)
    who = people.reindex(p["PATIENTS_ID"].to_numpy())
    start = p["START"].to_numpy()
    modifier = np.where(modified == p["BOOKED"].to_numpy(), p["CREATOR"].to_numpy(), p["REGISTRAR"].to_numpy())
    phone_note = p["COMMENT_PHONE"].to_numpy() == 1
    planning = pd.DataFrame({
        "PLANNING_ID": p["PLANNING_ID"].to_numpy(), "PL_SUBJ_ID": p["PL_SUBJ_ID"].to_numpy(),
        "DATE_CONS": _minutes_to_ts(start // DAY * DAY), "HEURE": (start % DAY // 60) * 100 + start % 60,
        "DUREE": p["DUREE"].to_numpy(), "PATIENTS_ID": p["PATIENTS_ID"].to_numpy(),
        "NOM": who["NOM"].to_numpy(), "PRENOM": who["PRENOM"].to_numpy(), "PATRONYME": who["PATRONYME"].to_numpy(),
        "MOTIF": np.asarray(_MOTIFS, dtype=object)[p["MOTIF"].to_numpy()],
        "COMMENTAIRE": np.where(phone_note, "Просит перезвонить: " + who["TEL"].fillna("").to_numpy(dtype=object),
                                None),
        "PL_EXAM_ID": p["PL_EXAM_ID"].to_numpy(),
        "CANCELLED": _flag(happened["CANCEL"], legacy), "STATUS": _flag(happened["DELETE"], legacy),
        "PATIENT_ARRIVEE": _flag(happened["ARRIVE"], legacy),
        "ARRIVE_DATE": _ts(p["ARRIVE"].to_numpy(), happened["ARRIVE"]),
        "NOT_ACCEPTED": _flag((p["NA0"].to_numpy() == 1) & ~happened["CONFIRM"], legacy),
        "SOURCE_PLANNING_ID": pd.array(np.where(p["SOURCE_PLANNING_ID"].to_numpy() >= 0,
                                                p["SOURCE_PLANNING_ID"].to_numpy(), np.where(legacy == 1, 0, -1)),
                                       dtype="Int64"),
        "MEDECINS_CREATOR_ID": p["CREATOR"].to_numpy(), "MEDECINS_MODIFY_ID": modifier,
        "CREATE_DATE_TIME": _minutes_to_ts(p["BOOKED"].to_numpy()), "MODIFY_DATE_TIME": _minutes_to_ts(modified),
        "DATE_START": _ts(start, legacy == 0), "DATE_END": _ts(start + p["DUREE"].to_numpy(), legacy == 0),
        "KRN_CREATE_DATE": _minutes_to_ts(p["BOOKED"].to_numpy()), "KRN_CREATE_USER_ID": p["CREATOR"].to_numpy(),
        "KRN_MODIFY_DATE": _minutes_to_ts(modified), "KRN_MODIFY_USER_ID": modifier,
    })
    planning["SOURCE_PLANNING_ID"] = planning["SOURCE_PLANNING_ID"].mask(planning["SOURCE_PLANNING_ID"] < 0)

    m = t[_before(t["MC_CREATE"], clock)]
    mh = {k: _before(m[k], clock) for k in MOTCONSU_EVENTS}
    mc_modified = np.max(np.stack([np.where(mh[k], m[k].to_numpy(), -1) for k in MOTCONSU_EVENTS]), axis=0)
    motconsu = pd.DataFrame({
        "MOTCONSU_ID": m["MC_ID"].to_numpy(), "PATIENTS_ID": m["PATIENTS_ID"].to_numpy(),
        "PLANNING_ID": _ids(np.where(m["MC_LINKED"].to_numpy() == 1, m["PLANNING_ID"].to_numpy(), -1)),
        "DATE_CONSULTATION": _minutes_to_ts(m["START"].to_numpy()), "MEDECINS_ID": _ids(m["MC_DOCTOR"].to_numpy()),
        "FM_DEP_ID": m["MC_DEP"].to_numpy(), "REC_STATUS": np.where(mh["MC_DELETE"], "D", "A"),
        "KRN_CREATE_DATE": _minutes_to_ts(m["MC_CREATE"].to_numpy()), "KRN_MODIFY_DATE": _minutes_to_ts(mc_modified),
    })
    bl = t[_before(t["BILL_AT"], clock)]
    bills = pd.DataFrame({
        "FM_BILL_ID": bl["BILL_ID"].to_numpy(), "PATIENTS_ID": bl["PATIENTS_ID"].to_numpy(),
        "BILL_DATE": _minutes_to_ts(bl["BILL_AT"].to_numpy()), "MEDECINS1_ID": _ids(bl["BILL_DOCTOR"].to_numpy()),
        "FM_INTORG_ID": bl["BRANCH"].to_numpy(), "KRN_CREATE_DATE": _minutes_to_ts(bl["BILL_AT"].to_numpy()),
        "KRN_MODIFY_DATE": _minutes_to_ts(bl["BILL_AT"].to_numpy()),
    })
    sms_parts = []
    for id_col, at_col, rec_type in (("SMS_ID", "SMS_AT", REMINDER_TYPE), ("SMS2_ID", "SMS2_AT", CONFIRMATION_TYPE)):
        s = t[_before(t[at_col], clock)]
        who_s = people.reindex(s["PATIENTS_ID"].to_numpy())
        ok = (s["SMS_OK"].to_numpy() == 1) | (rec_type == CONFIRMATION_TYPE)
        when = pd.to_datetime(s["START"].to_numpy() * 60, unit="s")
        text = (who_s["PRENOM"].fillna("").to_numpy(dtype=object) + " " + who_s["PATRONYME"].fillna("").to_numpy(
            dtype=object) + ", " + ("напоминаем о записи " if rec_type == REMINDER_TYPE else "вы записаны ")
                + when.strftime("%d.%m %H:%M").to_numpy(dtype=object) + ". Отменить: 8-800-000-00-00")
        sms_parts.append(pd.DataFrame({
            "SMS_MESSAGES_ID": s[id_col].to_numpy(), "REC_ID": s["PLANNING_ID"].to_numpy(), "REC_TYPE": rec_type,
            "STATUS": np.where(ok, 1, 2), "PHONE": who_s["TEL"].to_numpy(), "MESSAGE": text,
            "CREATE_DATE": _minutes_to_ts(s[at_col].to_numpy()),
            "SENDED_DATETIME": _ts(s[at_col].to_numpy(), ok),
        }))
    return {"PLANNING": planning, "MOTCONSU": motconsu, "FM_BILL": bills,
            "SMS_MESSAGES": pd.concat(sms_parts, ignore_index=True)}


def _patients_frame(tl: Timeline) -> pd.DataFrame:
    pts = tl.patients[tl.patients["KEEP"]]
    birth = _minutes_to_ts(pts["BIRTH_DAY"].to_numpy() * DAY)
    year = pd.to_datetime(birth).year.astype(str).to_numpy(dtype=object)
    return pd.DataFrame({
        "PATIENTS_ID": pts["PATIENTS_ID"].to_numpy(), "NOM": pts["NOM"].to_numpy(), "PRENOM": pts["PRENOM"].to_numpy(),
        "PATRONYME": pts["PATRONYME"].to_numpy(), "POL": np.where(pts["MALE"].to_numpy(), 0, 1),
        "NE_LE": np.where(pts["HAS_BIRTH_DATE"].to_numpy(), birth, np.datetime64("NaT")),
        "GOD_ROGDENIQ": year, "TEL": pts["TEL"].to_numpy(), "RAB_TEL": pts["RAB_TEL"].to_numpy(),
        "E_MAIL": pts["E_MAIL"].to_numpy(), "NOT_SEND_SMS": pts["NOSMS"].to_numpy().astype(int),
        "DOSSIER_EXIT": pts["DOSSIER_EXIT"].to_numpy().astype(int), "ARCHIVE": 0,
        "KRN_CREATE_DATE": _minutes_to_ts(pts["REGISTERED"].to_numpy()),
        "KRN_MODIFY_DATE": _minutes_to_ts(pts["REGISTERED"].to_numpy()),
    })


def truth_frame(tl: Timeline) -> pd.DataFrame:
    c = tl.bookings.cols
    outcome = np.select(
        [c["HARD_DELETE"] < NEVER, c["DELETE"] < NEVER, (c["CANCEL_KIND"] == 2) & np.isin(np.arange(len(c["P"])),
                                                                                         c["SOURCE"]),
         c["CANCEL_KIND"] == 2, np.isin(np.arange(len(c["P"])), c["SOURCE"]) & (c["CANCEL"] < NEVER),
         c["CANCEL"] < NEVER, c["NOSHOW"] == 1],
        ["hard_deleted", "deleted", "clinic_rescheduled", "clinic_cancelled", "rescheduled", "cancelled", "noshow"],
        default="show",
    )
    evidence = ((c["ARRIVE"] < NEVER) * 1 + (c["MC_MODIFY"] < NEVER) * 2 + (c["BILL_AT"] < NEVER) * 4)
    status_at = np.minimum(np.minimum(c["CANCEL"], c["DELETE"]), c["HARD_DELETE"])
    kept = c["KEPT"] == 1
    noshow = pd.array(c["NOSHOW"] == 1, dtype="boolean")
    noshow[~kept] = pd.NA
    return pd.DataFrame({
        "PLANNING_ID": c["PLANNING_ID"], "P_NOSHOW": c["P"], "NOSHOW": noshow,
        "OUTCOME": outcome, "BOOKED_AT": _minutes_to_ts(c["BOOKED"]), "START_AT": _minutes_to_ts(c["START"]),
        "STATUS_AT": _minutes_to_ts(status_at), "ATTENDANCE_EVIDENCE": evidence.astype(np.int64),
    })


# --------------------------------------------------------------------------------------------------
# database


def _writer():
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow comes with the locked dependencies
        return None
    return pa, pacsv


COPY_CHUNK_ROWS = 250_000


def copy_frame(cursor: Any, table: str, frame: pd.DataFrame) -> int:
    """COPY a frame into a table (columns by name) in chunks; the fastest CSV encoder available."""
    for begin in range(0, len(frame), COPY_CHUNK_ROWS):
        _copy_chunk(cursor, table, frame.iloc[begin:begin + COPY_CHUNK_ROWS])
    return len(frame)


def _copy_chunk(cursor: Any, table: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    tools = _writer()
    if tools is not None:
        pa, pacsv = tools
        arrays = {}
        for name in frame.columns:
            col = frame[name]
            if col.dtype.kind == "M":
                arrays[name] = pa.array(col.to_numpy(dtype="datetime64[s]"), type=pa.timestamp("s"),
                                        from_pandas=True)
            else:
                arrays[name] = pa.array(col, from_pandas=True)
        pacsv.write_csv(pa.table(arrays), buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    else:  # pragma: no cover
        frame.to_csv(io.TextIOWrapper(buffer, encoding="utf-8", write_through=True), index=False, header=False,
                     date_format="%Y-%m-%d %H:%M:%S")
    buffer.seek(0)
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    cursor.copy_expert(f'COPY "{table}" ({columns}) FROM STDIN WITH (FORMAT csv)', buffer)


def _timeline_table() -> sa.Table:
    existing = schema.metadata.tables.get("CLINICFLOW_TIMELINE")
    if existing is not None:
        return existing
    return sa.Table("CLINICFLOW_TIMELINE", schema.metadata,
                    *[sa.Column(c, sa.BigInteger, primary_key=(c == "PLANNING_ID"), autoincrement=False)
                      for c in TIMELINE_COLUMNS])


def _pending_copy(name: str, like: sa.Table) -> sa.Table:
    existing = schema.metadata.tables.get(name)
    if existing is not None:
        return existing
    return sa.Table(name, schema.metadata, *[sa.Column(c.name, c.type, primary_key=c.primary_key,
                                                       autoincrement=False) for c in like.columns])


def _generator_tables() -> list[sa.Table]:
    return [schema.CLINICFLOW_STATE, schema.CLINICFLOW_TRUTH, _timeline_table(),
            _pending_copy("CLINICFLOW_PENDING_PATIENTS", schema.PATIENTS),
            _pending_copy("CLINICFLOW_PENDING_EXCL", schema.PL_EXCL)]


def _to_url(url: str | sa.URL) -> sa.URL:
    parsed = sa.make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"the Medialog demo source is a PostgreSQL database; got {db.mask(parsed)}")
    return parsed


def default_demo_url() -> sa.URL:
    """``<warehouse database>_medialog_demo`` on the warehouse's server."""
    warehouse = db.url_for("warehouse")
    return warehouse.set(database=f"{warehouse.database}_medialog_demo")


def generate(url: str | sa.URL, *, appointments: int, seed: int = 42, today: date | None = None,
             **options: Any) -> GeneratorSummary:
    """(Re)create the Medialog demo source in the database at ``url`` (created if missing).

    ``options`` are further :class:`GeneratorConfig` fields (``history_days``, ``known_names``, …).
    Existing Medialog and generator tables in that database are dropped first; the same arguments
    always give the same data.
    """
    started = time.perf_counter()
    cfg = GeneratorConfig(appointments=appointments, seed=seed, today=today or date.today(), **options)
    cfg.validate()
    target = _to_url(url)
    engine = db.engine_for_url(target)
    with timed(f"medialog-demo generate ({appointments:,} appointments, seed {seed})", log) as timer:
        with timed("medialog-demo: draw the timeline", log):
            tl = build_timeline(cfg)
        clock = grid.day_number(cfg.today) * DAY
        with timed("medialog-demo: materialise", log):
            t = timeline_frame(tl)
            people = _patients_frame(tl)
            tables = materialise(t, clock, people.set_index("PATIENTS_ID"))
            excl = _exclusion_frame(tl.exclusions)
            tables.update({k: v for k, v in tl.clinic.frames.items()})
            pending_patients = people[people["KRN_CREATE_DATE"] >= _minutes_to_ts(np.array([clock]))[0]]
            tables["PATIENTS"] = people.drop(pending_patients.index)
            pending_excl = excl[tl.exclusions["CREATED"].to_numpy() >= clock]
            tables["PL_EXCL"] = excl.drop(pending_excl.index)
            open_rows = np.zeros(len(t), dtype=bool)
            for column in EVENT_COLUMNS:
                values = t[column].to_numpy()
                open_rows |= (values >= clock) & (values < NEVER)
            truth = truth_frame(tl)
            future = int((tables["PLANNING"]["DATE_CONS"] >= pd.Timestamp(cfg.today)).sum())
        rows: dict[str, int] = {}
        with timed("medialog-demo: write", log):
            raw = engine.raw_connection()
            try:
                cursor = raw.driver_connection.cursor()
                cursor.execute("SET LOCAL synchronous_commit = off")  # a regenerable demo database
                _recreate(cursor)
                for table in schema.MEDIALOG_TABLES:
                    with timed(f"medialog-demo: COPY {table.name}", log) as step:
                        rows[table.name] = step.rows = copy_frame(cursor, table.name, tables.pop(table.name))
                rows["CLINICFLOW_TRUTH"] = copy_frame(cursor, "CLINICFLOW_TRUTH", truth)
                rows["CLINICFLOW_TIMELINE"] = copy_frame(cursor, "CLINICFLOW_TIMELINE", t[open_rows])
                rows["CLINICFLOW_PENDING_PATIENTS"] = copy_frame(cursor, "CLINICFLOW_PENDING_PATIENTS",
                                                                 pending_patients)
                rows["CLINICFLOW_PENDING_EXCL"] = copy_frame(cursor, "CLINICFLOW_PENDING_EXCL", pending_excl)
                with timed("medialog-demo: indexes", log):
                    _indexes(cursor)
                horizon_end = cfg.today + timedelta(days=cfg.horizon_days)
                cursor.execute(
                    'INSERT INTO "CLINICFLOW_STATE" ("ID", "CLOCK", "HORIZON_END", "SEED", "APPOINTMENTS", '
                    '"GENERATOR_VERSION", "CONFIG", "GENERATED_AT") VALUES (1, %s, %s, %s, %s, %s, %s, now())',
                    (cfg.today, horizon_end, cfg.seed, cfg.appointments, GENERATOR_VERSION, cfg.to_json()))
                raw.commit()
                with timed("medialog-demo: ANALYZE", log):
                    cursor.execute("ANALYZE")
                    raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                raw.close()
        timer.rows = rows["PLANNING"]
    summary = GeneratorSummary(
        database=db.mask(target), clock=cfg.today.isoformat(), seed=cfg.seed,
        horizon_end=(cfg.today + timedelta(days=cfg.horizon_days)).isoformat(),
        seconds=round(time.perf_counter() - started, 2), rows=rows,
        stats={**tl.stats, "appointments": rows["PLANNING"], "patients": rows["PATIENTS"],
               "future_appointments": future,
               "pending_timeline_rows": rows["CLINICFLOW_TIMELINE"]},
    )
    log.info("medialog-demo: %s", json.dumps(summary.stats, default=str))
    return summary


def _recreate(cursor: Any) -> None:
    names = [t.name for t in schema.MEDIALOG_TABLES] + [t.name for t in _generator_tables()]
    for name in names:
        cursor.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    for table in list(schema.MEDIALOG_TABLES) + _generator_tables():
        cursor.execute(str(sa.schema.CreateTable(table).compile(dialect=dialect)))


def _indexes(cursor: Any) -> None:
    for table, columns in schema.INDEXES:
        name = f"ix_{table}_{'_'.join(columns)}".lower()
        cols = ", ".join(f'"{c}"' for c in columns)
        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({cols})')


def read_state(url: str | sa.URL) -> dict[str, Any] | None:
    """The generator's state row (clock, horizon, seed, …), or None if the database has no generated source."""
    engine = db.engine_for_url(_to_url(url))
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("CLINICFLOW_STATE"):
            return None
        row = conn.execute(sa.select(schema.CLINICFLOW_STATE)).mappings().first()
    return dict(row) if row else None


def advance(url: str | sa.URL, to: date) -> GeneratorSummary:
    """Move the source's clock to ``to`` (00:00): play every event of the days in between.

    Bookings made, confirmed, cancelled, deleted; patients arriving, visit records, bills, reminders;
    patients registering and leave being entered — exactly what the timeline drawn by
    ``generate()`` holds for those days, with their real timestamps (so ``KRN_MODIFY_DATE`` falls
    inside the simulated days). Advancing twice by one day equals advancing once by two.
    """
    started = time.perf_counter()
    target = _to_url(url)
    state = read_state(target)
    if state is None:
        raise ClinicFlowError(f"{db.mask(target)} holds no generated Medialog source: run "
                              "`clinicflow medialog-demo generate` first")
    clock_day, horizon_end = state["CLOCK"], state["HORIZON_END"]
    if to < clock_day:
        raise ConfigError(f"cannot advance backwards: the source's clock is {clock_day}, asked for {to}")
    if to > horizon_end:
        raise ConfigError(f"the source was generated to be advanced up to {horizon_end}; asked for {to}. "
                          "Generate it again with a larger --horizon-days")
    old, new = grid.day_number(clock_day) * DAY, grid.day_number(to) * DAY
    rows: dict[str, int] = {}
    engine = db.engine_for_url(target)
    with timed(f"medialog-demo advance {clock_day} → {to}", log) as timer:
        if new == old:
            return GeneratorSummary(db.mask(target), to.isoformat(), int(state["SEED"]), horizon_end.isoformat(),
                                    0.0, {}, {"changed": 0})
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            cursor = conn.cursor()
            cursor.execute('SELECT "CLOCK" FROM "CLINICFLOW_STATE" WHERE "ID" = 1 FOR UPDATE')
            locked_clock = cursor.fetchone()[0]
            if locked_clock != clock_day:
                raise ClinicFlowError("the source's clock moved while advancing; run advance again")
            window = " OR ".join(f'("{c}" >= %(old)s AND "{c}" < %(new)s)' for c in EVENT_COLUMNS)
            t = _query_frame(cursor, f'SELECT * FROM "CLINICFLOW_TIMELINE" WHERE {window}', {"old": old, "new": new})
            t = t.reindex(columns=list(TIMELINE_COLUMNS)).astype(np.int64)
            rows.update(_insert_pending(cursor, "PATIENTS", "CLINICFLOW_PENDING_PATIENTS", to))
            rows.update(_insert_pending(cursor, "PL_EXCL", "CLINICFLOW_PENDING_EXCL", to))
            people = _people(cursor, t["PATIENTS_ID"].unique())
            tables = materialise(t, new, people)
            changed = {
                "PLANNING": _touched(t, PLANNING_EVENTS, old, new),
                "MOTCONSU": _touched(t, MOTCONSU_EVENTS, old, new),
            }
            rows["PLANNING"] = _replace(cursor, "PLANNING", "PLANNING_ID", t.loc[changed["PLANNING"], "PLANNING_ID"],
                                        tables["PLANNING"])
            rows["MOTCONSU"] = _replace(cursor, "MOTCONSU", "MOTCONSU_ID", t.loc[changed["MOTCONSU"], "MC_ID"],
                                        tables["MOTCONSU"])
            bills = tables["FM_BILL"]
            since = _minutes_to_ts(np.array([old]))[0]
            rows["FM_BILL"] = copy_frame(cursor, "FM_BILL", bills[bills["BILL_DATE"] >= since])
            sms = tables["SMS_MESSAGES"]
            rows["SMS_MESSAGES"] = copy_frame(cursor, "SMS_MESSAGES", sms[sms["CREATE_DATE"] >= since])
            rows["hard_deleted"] = int(((t["HARD_DELETE"] >= old) & (t["HARD_DELETE"] < new)
                                        & (t["BOOKED"] < old)).sum())
            settled = np.ones(len(t), dtype=bool)
            for column in EVENT_COLUMNS:
                values = t[column].to_numpy()
                settled &= ~((values >= new) & (values < NEVER))
            cursor.execute('DELETE FROM "CLINICFLOW_TIMELINE" WHERE "PLANNING_ID" = ANY(%s)',
                           (t.loc[settled, "PLANNING_ID"].tolist(),))
            cursor.execute('UPDATE "CLINICFLOW_STATE" SET "CLOCK" = %s, "ADVANCED_AT" = now() WHERE "ID" = 1', (to,))
            conn.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        timer.rows = rows.get("PLANNING", 0)
    return GeneratorSummary(db.mask(target), to.isoformat(), int(state["SEED"]), horizon_end.isoformat(),
                            round(time.perf_counter() - started, 2), rows,
                            {"changed_bookings": int(changed["PLANNING"].sum()), "from": clock_day.isoformat()})


def _touched(t: pd.DataFrame, columns: Sequence[str], old: int, new: int) -> np.ndarray:
    mask = np.zeros(len(t), dtype=bool)
    for column in columns:
        values = t[column].to_numpy()
        mask |= (values >= old) & (values < new)
    return mask


def _replace(cursor: Any, table: str, key: str, ids: pd.Series, rows: pd.DataFrame) -> int:
    """Delete the rows with ``ids`` and insert their new state (rows absent from ``rows`` stay deleted)."""
    ids = ids[ids >= 0]
    cursor.execute(f'DELETE FROM "{table}" WHERE "{key}" = ANY(%s)', (ids.tolist(),))
    return copy_frame(cursor, table, rows[rows[key].isin(ids)])


def _insert_pending(cursor: Any, table: str, pending: str, to: date) -> dict[str, int]:
    cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{pending}" WHERE "KRN_CREATE_DATE" < %s', (to,))
    count = cursor.rowcount
    cursor.execute(f'DELETE FROM "{pending}" WHERE "KRN_CREATE_DATE" < %s', (to,))
    return {table: count}


def _query_frame(cursor: Any, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    cursor.execute(sql, params)
    return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])


def _people(cursor: Any, ids: np.ndarray) -> pd.DataFrame:
    frame = _query_frame(
        cursor, 'SELECT "PATIENTS_ID", "NOM", "PRENOM", "PATRONYME", "TEL" FROM "PATIENTS" '
        'WHERE "PATIENTS_ID" = ANY(%(ids)s)', {"ids": [int(i) for i in ids]})
    return frame.set_index("PATIENTS_ID")


def ensure(url: str | sa.URL, *, appointments: int, seed: int = 42, today: date, **options: Any) -> GeneratorSummary:
    """Make the source exist for ``today``: generate it if absent or generated with other settings,
    advance it if its clock is behind, leave it alone if it is already there (the demo's re-runs)."""
    state = read_state(url)
    if state is not None:
        config = json.loads(state["CONFIG"])
        same = (int(state["SEED"]) == seed and int(state["APPOINTMENTS"]) == appointments
                and state["GENERATOR_VERSION"] == GENERATOR_VERSION
                and all(config.get(k) == v for k, v in options.items() if not isinstance(v, tuple | list)))
        if same and state["CLOCK"] == today:
            return GeneratorSummary(db.mask(_to_url(url)), today.isoformat(), seed, state["HORIZON_END"].isoformat(),
                                    0.0, {}, {"unchanged": True})
        if same and state["CLOCK"] < today <= state["HORIZON_END"]:
            return advance(url, today)
    return generate(url, appointments=appointments, seed=seed, today=today, **options)


def truth_upper_bound(url: str | sa.URL, *, before: date | None = None) -> dict[str, float]:
    """AUC and Brier score of the true probabilities on kept bookings that already happened: no model
    can do better on this source (in expectation)."""
    engine = db.engine_for_url(_to_url(url))
    with engine.connect() as conn:
        state = conn.execute(sa.select(schema.CLINICFLOW_STATE.c.CLOCK)).scalar_one()
        cutoff = before or state
        frame = pd.read_sql_query(
            sa.text('SELECT "P_NOSHOW", "NOSHOW" FROM "CLINICFLOW_TRUTH" WHERE "NOSHOW" IS NOT NULL '
                    'AND "START_AT" < :cutoff'), conn, params={"cutoff": datetime.combine(cutoff, datetime.min.time())})
    p, y = frame["P_NOSHOW"].to_numpy(), frame["NOSHOW"].to_numpy(dtype=bool)
    return {"auc": auc(p, y), "brier": float(np.mean((p - y) ** 2)), "noshow_rate": float(y.mean()),
            "n": len(y), "as_of": cutoff.isoformat(), "computed_at": datetime.now(UTC).isoformat()}
