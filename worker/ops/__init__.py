"""Operator tools: the CLI, the local stack and demo, metrics and logs."""
