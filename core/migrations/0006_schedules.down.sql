DROP TABLE job_schedule_ticks;
DROP TABLE job_schedules;
