"""Speed and real-data benchmarks (``clinicflow bench …``; never part of the test suite)."""
