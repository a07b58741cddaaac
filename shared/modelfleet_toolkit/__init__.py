"""modelfleet's model development toolkit: train, tune and evaluate models (``modelfleet`` CLI)."""
