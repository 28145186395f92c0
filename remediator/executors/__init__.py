"""Executors: what a planned step turns into (a record, or a Kubernetes call)."""
