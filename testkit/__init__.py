"""What the tests, the chaos runner and the benchmarks share, one module per concern:
services, events, kafka, database, processes, metrics, waiting, outages, toxiproxy.

A package of its own at the top of the repository, so that `tests/` and `bench/` both import
it and never each other (tests/unit/test_imports.py holds them to that).
"""
