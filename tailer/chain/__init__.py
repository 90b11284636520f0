"""Tamper evidence on the tailer (issue 12): each chunk's chain link checked on receipt, stored with its
events, and re-checked on demand (verify). link.py is the pure bookkeeping, stage.py the ingest stage,
verify.py the pure re-check that runs in the API's query pool."""
