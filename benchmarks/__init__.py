"""`make bench`: the Extralt load path against its limit and against what users would do
instead, the cost of polling, and Dagster's overhead, all measured in one run. See
BENCHMARKS.md; not part of the installed package."""
