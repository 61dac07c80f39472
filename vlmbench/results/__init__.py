"""Run records: a JSON header plus per-sample JSONL, curves as CSV, checkpoints."""
