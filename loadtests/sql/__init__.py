"""Named SQL blocks of the flood runner's measurements (loaded by loadtests/flow_sql.py)."""
