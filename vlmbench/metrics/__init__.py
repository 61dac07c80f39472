"""Evaluation metrics: success rate of trained agents (and, later, EPIC distance, bias probes)."""
