"""boundq's invariant suite: `pytest invariants/` is the evidence that boundq keeps the
promises of docs/design.md ("Invariants") while workers die and the database goes away.

    checker.py        the history checker: reports each invariant by name, with job ids
    cron_check.py     its one_job_per_tick part: every tick of every cron schedule has one
                      job, or was skipped by the documented catch-up rule (docs/cron.md)
    test_checker.py   hand-made bad histories, each caught under the right name
    machine.py        Hypothesis RuleBasedStateMachine driving real `boundq worker`
                      processes against a PostgreSQL cluster the session owns: enqueue
                      one/bulk, start workers (some with crash points or a skewed clock),
                      SIGKILL, SIGTERM, SIGSTOP past the lease + SIGCONT, `pg_ctl stop -m
                      immediate` + start, pg_terminate_backend (LISTEN and pool sessions),
                      network black hole / reset through core/faultproxy.py, cancel, reaper
                      passes, cron schedules ticking every second or two (their schedulers
                      run in the workers) and SIGKILLs at tick boundaries, waiting; cheap
                      checks after every step, full check at the end
    test_machine.py   the machine against boundq: zero violations
    test_scenarios.py one deterministic scenario per known failure of peer queues
    test_selftest.py  the same machine against five deliberately broken queues
                      (broken_worker.py, variants.py): each must be detected
    harness.py        one run: database clone, worker processes, proxies, drain, check
    audit.py          test-only audit trigger recording every UPDATE of a jobs row
    handlers.py       test job kinds (slow/stalling `effect`, `stall`, `poison`)

Run: `pytest invariants/` (BOUNDQ_INVARIANTS_PROFILE=ci, the default, about five minutes
on two cores) or `make soak` (BOUNDQ_INVARIANTS_PROFILE=soak: many more and longer runs).
Both end with a summary: examples run, faults injected by kind, jobs checked, violations.
A failing history is kept as one JSON file per failure under invariants/failures/ (or
BOUNDQ_INVARIANTS_ARTIFACTS); the self-test's expected ones under failures/selftest/.
"""
