"""remediator: event-driven alert remediation for Kubernetes.

Layers (outermost depends on innermost, never the reverse):

* ``remediator.core`` - pure logic: alert parsing, playbooks, matching, templates,
  guardrail decisions, planning.  No I/O; enforced by ``tests/test_architecture.py``.
* ``remediator.ports`` - the Protocols the pipeline talks to (clock, store,
  guardrail state, executor, notifier).
* adapters - ``remediator.store``, ``remediator.guardstate``, ``remediator.executors``,
  ``remediator.notify``: the only modules that touch SQLite, PostgreSQL, Redis, Kubernetes or HTTP.
* ``remediator.pipeline`` - the one pipeline every mode (serve, dry-run, replay) runs.
* ``remediator.app`` / ``remediator.http`` / ``remediator.cli`` - wiring.
"""

__version__ = "0.1.0"
