"""asv benchmark suite for moola (see docs/benchmarks.md). The pytest-benchmark suite is in pytest_bench/."""
