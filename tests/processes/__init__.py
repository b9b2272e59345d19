"""Programs the multi-process tests start with ``python -m tests.processes.<name>``.

They are not test modules (pytest does not collect them); each one is a small bot-like
process on a shared database file, driven by command-line arguments and reporting on stdout.
"""
