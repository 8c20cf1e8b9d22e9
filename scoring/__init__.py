"""ClinicFlow scoring stage."""
