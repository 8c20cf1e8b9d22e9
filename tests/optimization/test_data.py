"""Resource-days from appointment frames: grids, booking order, blocked slots, patient groups."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from optimization.data import age_band, build_resource_days, risk_deciles, welfare


def frame(n, resource="r", start=datetime(2026, 5, 4, 0, 0), same_time=True):
    rows = []
    for k in range(n):
        rows.append(dict(source="s", appointment_id=f"a{k}", resource_id=resource,
                         start_at=start if same_time else start + timedelta(minutes=20 * k),
                         booked_at=datetime(2026, 5, 1) + timedelta(hours=n - k),  # booked in reverse order
                         probability=0.1 + 0.8 * k / max(n, 1), sex="F", birth_year=1990,
                         flags={"scholarship": 1} if k % 2 else {}))
    return pd.DataFrame(rows)


def test_booking_order_days_are_split_into_sessions_in_booking_order():
    days, starts = build_resource_days(frame(90), extra_show_prob=0.8, session_slots=40)
    assert [d.n_slots for d in days] == [30, 30, 30]
    assert all(d.info["grid"] == "booking_order" for d in days)
    assert starts[0]["starts"] is None
    first = days[0]
    assert list(first.appointment_ids[:3]) == ["a89", "a88", "a87"]  # earliest booking first
    assert (first.slot_of == np.arange(30)).all()
    assert first.groups["welfare"][0] == "no welfare" or first.groups["welfare"][0] == "welfare"


def test_slot_grid_places_appointments_and_blocks_slots():
    appts = frame(5, same_time=False)
    appts.loc[4, "start_at"] = datetime(2026, 5, 4, 1, 25)   # inside the slot starting 01:20
    appts["service_no_overbook"] = [False, True, False, False, False]
    slots = pd.DataFrame({"source": "s", "resource_id": "r",
                          "start_at": [datetime(2026, 5, 4) + timedelta(minutes=20 * k) for k in range(6)],
                          "no_overbook": [False, False, False, True, False, False]})
    days, starts = build_resource_days(appts, slots, extra_show_prob=0.8)
    (day,) = days
    assert day.info["grid"] == "slots" and day.n_slots == 6
    assert list(day.slot_of) == [0, 1, 2, 3, 4]
    assert list(day.blocked) == [False, True, False, True, False, False]
    assert starts[0]["starts"][5] == datetime(2026, 5, 4, 1, 40)


def test_resource_day_grid_and_leave():
    appts = frame(3, same_time=False)
    rd = pd.DataFrame([{"source": "s", "resource_id": "r", "day": date(2026, 5, 4), "slots": 8, "slot_minutes": 20,
                        "work_start": datetime(2026, 5, 4, 0, 0).time(), "on_leave": False}])
    (day,), _ = build_resource_days(appts, None, rd, extra_show_prob=0.8)
    assert day.info["grid"] == "resource_day" and day.n_slots == 8
    rd.loc[0, "on_leave"] = True
    assert build_resource_days(appts, None, rd, extra_show_prob=0.8) == ([], [])


def test_group_helpers():
    assert age_band(1990, date(2026, 1, 1)) == "35-49"
    assert age_band(None, date(2026, 1, 1)) == "unknown"
    assert welfare({"scholarship": 1}) == "welfare"
    assert welfare('{"welfare": true}') == "welfare"
    assert welfare({"diabetes": 1}) == "no welfare"
    deciles = risk_deciles(np.linspace(0, 1, 100))
    assert deciles[0] == "D01" and deciles[-1] == "D10" and len(set(deciles)) == 10


def test_appointments_outside_the_grid_get_their_own_slot():
    # slots 09:00-10:00 and 11:00-12:00 (30 min), a break between; appointments in the break and after the end
    times = [datetime(2026, 5, 4, 9, 0), datetime(2026, 5, 4, 9, 30), datetime(2026, 5, 4, 11, 0),
             datetime(2026, 5, 4, 11, 30)]
    slots = pd.DataFrame({"source": "s", "resource_id": "r", "start_at": times, "duration_min": 30,
                          "no_overbook": False})
    appts = frame(4, same_time=False)
    appts["start_at"] = [datetime(2026, 5, 4, 9, 0), datetime(2026, 5, 4, 10, 15), datetime(2026, 5, 4, 11, 30),
                         datetime(2026, 5, 4, 12, 10)]
    (day,), starts = build_resource_days(appts, slots, extra_show_prob=0.8)
    assert day.n_slots == 6
    assert starts[0]["starts"][2] == datetime(2026, 5, 4, 10, 15) and starts[0]["starts"][5] == datetime(2026, 5, 4,
                                                                                                          12, 10)
    assert list(day.slot_of) == [0, 2, 4, 5]  # nobody piled onto a neighbouring slot


def test_resource_day_grid_spans_the_working_hours():
    appts = frame(2, same_time=False)
    appts["start_at"] = [datetime(2026, 5, 4, 8, 0), datetime(2026, 5, 4, 14, 30)]
    rd = pd.DataFrame([{"source": "s", "resource_id": "r", "day": date(2026, 5, 4), "slots": 13, "slot_minutes": 30,
                        "work_start": datetime(2026, 5, 4, 8, 0).time(), "work_end": datetime(2026, 5, 4, 15, 0).time(),
                        "on_leave": False}])
    (day,), _ = build_resource_days(appts, None, rd, extra_show_prob=0.8)
    assert day.n_slots == 14  # 08:00-15:00 in 30-minute slots; the 14th is a break the template left out
    assert list(day.slot_of) == [0, 13]
