"""ClinicFlow optimization stage: recommended overbooking per slot (see docs/optimization.md).

* :mod:`optimization.model` — a resource-day, cost weights and constraints;
* :mod:`optimization.evaluator` — exact evaluation of plans under the slot model;
* :mod:`optimization.baselines` — none, flat, threshold, top-k, greedy;
* :mod:`optimization.optimizer` — the CP-SAT second-order neighbourhood optimiser (``optimize``);
* :mod:`optimization.scenario` — the sampled-scenario CP-SAT formulation, for comparison;
* :mod:`optimization.replay`, :mod:`optimization.policy_eval`, :mod:`optimization.history`,
  :mod:`optimization.evaluation_store` — policy evaluation (``clinicflow evaluate-policies``);
* :mod:`optimization.data`, :mod:`optimization.stage`, :mod:`optimization.publish` — the nightly
  ``optimise`` and ``publish`` tasks over the warehouse (``clinicflow optimize``, ``clinicflow next-week``).
"""
