"""`make bench` (bench/run.py) and the no-op task it compares smsq with (bench/app.py)."""

NOOP_TASK = "smsq.noop"
NOOP_COUNTER = "smsq:bench:noop"
