"""Host tests.  tests/host/data holds recorded guest output and the in-guest probes that
made it (run in guests by data/guest/record.py): data, never collected here."""

collect_ignore = ["data"]
