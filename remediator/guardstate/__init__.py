"""Guardrail state adapters: embedded (single node) and Redis (shared by replicas)."""
