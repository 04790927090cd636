ALTER TABLE jobs SET (autovacuum_vacuum_cost_delay = 0);
