"""ClinicFlow: no-show forecasting and overbooking for outpatient clinics.

The ``clinicflow`` package holds what every stage shares: typed settings, the one module that
opens database connections, schema migrations, logging and the command line. The stages live in
the sibling packages ``pipelines``, ``features``, ``training``, ``scoring`` and ``optimization``.
"""

__version__ = "0.1.0"
