"""One module per check; each registers itself with diagnostics.registry."""
