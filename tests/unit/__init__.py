"""Fast unit tests: pure, no subprocesses, no network (issue 11)."""
