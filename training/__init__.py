"""ClinicFlow training stage."""
