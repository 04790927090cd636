DROP TABLE job_modules;
