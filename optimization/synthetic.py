"""Generated resource-days with known no-show probabilities and drawn outcomes.

Used by the tests, the benchmarks and ``clinicflow evaluate-policies --synthetic``. The mechanism
(documented so results can be judged):

* a resource-day has 12–40 slots (or a fixed number); about 85% of them are booked with one patient,
  3% with two (a double booking already made by the registry), the rest are free; about 5% of the
  slots are marked ``no_overbook``;
* each booked patient has an age band, a sex and a welfare flag; their *true* no-show probability is
  ``sigmoid(a_day + effects + noise)``: a day-level rate around ``mean_noshow``, +0.5 logit for
  the welfare programme, +0.4 for ages 18–34, −0.3 for 65+, and individual noise (sd 0.9 logit) —
  so patients differ a lot, as the literature reports;
* the *predicted* probability is what a calibrated but imperfect model outputs:
  ``sigmoid(logit(true) + N(0, model_noise))``, shrunk towards the mean so that it stays calibrated;
* the outcome (came or not) is drawn from the true probability. It is held out: optimisers only see
  the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimization.model import ResourceDay

AGE_BANDS = ("0-17", "18-34", "35-49", "50-64", "65+")
_AGE_EFFECT = {"0-17": 0.0, "18-34": 0.4, "35-49": 0.1, "50-64": -0.1, "65+": -0.3}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class GeneratedDay:
    day: ResourceDay
    #: Did each booked patient come (the held-out outcome)?
    showed: np.ndarray
    #: True no-show probability of each booked patient (unknown to every policy).
    true_noshow: np.ndarray


def generate_days(n: int, seed: int = 0, slots: int | tuple[int, int] = (12, 40), mean_noshow: float = 0.2,
                  model_noise: float = 0.6, extra_show_prob: float | None = None,
                  blocked_share: float = 0.05) -> list[GeneratedDay]:
    """``n`` resource-days (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    out: list[GeneratedDay] = []
    for i in range(n):
        F = int(slots) if isinstance(slots, int) else int(rng.integers(slots[0], slots[1] + 1))
        per_slot = rng.choice([0, 1, 2], size=F, p=[0.12, 0.85, 0.03])
        slot_of = np.repeat(np.arange(F), per_slot)
        P = slot_of.size
        age = rng.choice(AGE_BANDS, size=P, p=[0.15, 0.25, 0.25, 0.2, 0.15])
        sex = rng.choice(["F", "M"], size=P, p=[0.6, 0.4])
        welfare = rng.random(P) < 0.15
        base = _logit(np.array(mean_noshow)) + rng.normal(0.0, 0.35)
        effects = np.array([_AGE_EFFECT[a] for a in age]) + 0.5 * welfare
        true = _sigmoid(base + effects + rng.normal(0.0, 0.9, P))
        noisy = _logit(true) + rng.normal(0.0, model_noise, P)
        # shrink so that the noisy prediction stays (roughly) calibrated
        pred = _sigmoid(_logit(np.array(mean_noshow)) + (noisy - _logit(np.array(mean_noshow)))
                        / np.sqrt(1.0 + model_noise**2 * 0.6))
        showed = rng.random(P) >= true
        blocked = rng.random(F) < blocked_share
        q = extra_show_prob if extra_show_prob is not None else 1.0 - mean_noshow
        day = ResourceDay(
            key=f"gen-{seed}-{i:05d}", n_slots=F, slot_of=slot_of, show_prob=1.0 - pred, extra_show_prob=q,
            blocked=blocked,
            groups={"age_band": age, "sex": sex, "welfare": np.where(welfare, "welfare", "no welfare")},
            appointment_ids=np.array([f"gen-{seed}-{i:05d}-{k}" for k in range(P)], dtype=object),
            info={"generated": True},
        )
        out.append(GeneratedDay(day=day, showed=showed, true_noshow=true))
    return out
