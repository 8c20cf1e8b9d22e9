DROP TABLE IF EXISTS reporting.nightly_summary;
