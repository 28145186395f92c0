"""Store access for the operator commands (``remediator migrate``, ``remediator export``).

They open the configured store the way the daemon would, but never as its owner: the
embedded store is opened without releasing the running daemon's claims, and a missing
embedded file is an error rather than a fresh empty store.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from remediator.clock import SystemClock
from remediator.core.alerts import WebhookPayload, format_time
from remediator.core.errors import ConfigError
from remediator.ports import KillSwitchRecord, Store, StoredAlert
from remediator.settings import Settings


def embedded_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "remediator.db"


async def open_store(settings: Settings, *, migrate_schema: bool = True) -> Store:
    clock = SystemClock()
    if settings.database_url:
        from remediator.store.postgres import PostgresStore

        return await PostgresStore.open(settings.database_url, clock, migrate_schema=migrate_schema)
    from remediator.store.sqlite import SQLiteStore

    path = embedded_path(settings)
    if not path.exists():
        raise ConfigError(f"no embedded store at {path} (set --data-dir or --database-url)")
    return await SQLiteStore.open(path, clock, recover=False)


def replay_line(stored: StoredAlert) -> dict[str, Any]:
    """One recorded alert as the replay input line ``{"received_at", "payload"}``.

    The payload is a v4 webhook carrying just that alert, as Alertmanager would have
    sent it: replay then decides each alert at the time it was really received.
    """
    r = stored.received
    payload = WebhookPayload(
        version="4",
        status=r.alert.status,
        alerts=(r.alert,),
        receiver=r.receiver,
        group_key=r.group_key,
        common_labels=r.alert.labels,
        common_annotations=r.alert.annotations,
        external_url=r.external_url,
    )
    return {"received_at": format_time(r.received_at), "payload": payload.to_json()}


def control_line(record: KillSwitchRecord) -> dict[str, Any]:
    """A setting of the kill switch as the replay input's control line (``by``: for the reader, replay
    ignores it)."""
    return {"at": format_time(record.at), "control": "pause" if record.paused else "resume", "by": record.by}


async def export_alerts(store: Store, since: datetime, until: datetime, out: TextIO) -> int:
    """Write every alert received in ``[since, until)`` as JSON Lines, with the kill switch's settings
    of that span as control lines among them in time order (a setting before an alert received at
    the same instant); return how many alerts.

    Without them, replay would decide ``executed`` what the daemon decided ``paused``.  A span that
    starts while paused starts with a pause line at ``since``."""
    settings = await store.kill_switch_history(since, until)
    if settings and settings[0].at < since:
        before = settings.pop(0)
        if before.paused:
            settings.insert(0, KillSwitchRecord(True, before.by, since))
    controls = iter(settings)
    control = next(controls, None)
    count = 0
    async for stored in store.alerts_between(since, until):
        while control is not None and control.at <= stored.received.received_at:
            out.write(json.dumps(control_line(control), separators=(",", ":")) + "\n")
            control = next(controls, None)
        out.write(json.dumps(replay_line(stored), separators=(",", ":")) + "\n")
        count += 1
    for rest in (control, *controls) if control is not None else ():
        out.write(json.dumps(control_line(rest), separators=(",", ":")) + "\n")
    return count
