"""Declarative specs: task YAML, judge YAML, the safe expression language and the catalogue."""
