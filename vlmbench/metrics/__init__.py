"""Evaluation metrics: success rate of trained agents (success); EPIC distance (epic), judge quality
(judge_quality) and positional-bias probes (bias_probes), which report Metric values with bootstrap intervals
(bootstrap)."""
