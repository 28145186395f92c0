"""Intake/audit store adapters: embedded SQLite (single node) and PostgreSQL."""

