"""The chaos soak: many materializations of several sources against the emulator, with faults.

`python -m soak.run_soak` (or `make soak`) runs it; `tests/test_soak.py` runs a CI-sized one.
See RELIABILITY.md for what it asserts and the figures it measured.
"""
