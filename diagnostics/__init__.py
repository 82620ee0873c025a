"""moola-diag: diagnostics and benchmarks around the moola training pipeline."""

PROG = "moola-diag"  # the program name, in messages, reports and the gate
