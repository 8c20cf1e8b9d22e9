"""Argument types shared by every ``clinicflow`` subcommand module (kept free of heavy imports)."""

from __future__ import annotations

import argparse
from datetime import date


def iso_date(text: str) -> date:
    """``YYYY-MM-DD`` as a date; anything else is a usage error that names the value."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
