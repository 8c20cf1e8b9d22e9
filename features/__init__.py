"""ClinicFlow features stage."""
