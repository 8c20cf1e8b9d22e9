"""ClinicFlow optimization stage."""
