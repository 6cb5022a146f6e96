"""What every task's training shares: the settings, the run pipeline, the engine, the checkpoint format,
run folders and resume, distributed set-up, schedules and reports. The tasks are in ``botnet.tasks``."""
