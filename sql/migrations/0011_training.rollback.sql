DROP TABLE IF EXISTS ml.training_run;
