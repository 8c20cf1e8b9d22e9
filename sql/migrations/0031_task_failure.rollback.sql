DROP TABLE IF EXISTS ops.task_failure;
