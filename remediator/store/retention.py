"""Which old records retention may delete, as SQL both stores share.

Deleting an alert's record and its decisions lets a later delivery of the same alert
count as new, and be decided (and executed) again.  Alertmanager re-sends a firing
alert every ``repeat_interval`` for as long as it fires, however old it is, so age
alone is not enough: a firing episode's records go only once it has ended, i.e. its
resolved delivery is recorded.  An alert that never resolves is kept (the safe side).
The resolved record itself goes last, once no firing record of its episode is left,
since it is the proof that the episode ended.

A record key is ``fingerprint|startsAt|status`` (``Alert.dedup_key``); the SQL below
derives the sibling key by replacing the status suffix.  ``substr``, ``length`` and
``||`` mean the same in SQLite and PostgreSQL.
"""

from __future__ import annotations


def closed(key: str) -> str:
    """SQL: the episode of the alert record keyed ``key`` (a column) has ended."""
    return (
        f"({key} LIKE '%|resolved' OR EXISTS (SELECT 1 FROM alerts r"
        f" WHERE r.dedup_key = substr({key}, 1, length({key}) - 6) || 'resolved'))"
    )


_FIRING_OF_RESOLVED = "substr(a.dedup_key, 1, length(a.dedup_key) - 8) || 'firing'"

#: SQL over alias ``a``: a firing record whose episode has ended and whose decisions are gone
#: (a decision younger than the cutoff keeps its alert, and so the proof its episode ended).
FIRING_ENDED = (
    f"a.status = 'firing' AND {closed('a.dedup_key')}"
    " AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.alert_key = a.dedup_key)"
)

#: SQL over alias ``a``: a resolved record with no firing record, and no decision, of its episode left.
RESOLVED_ALONE = (
    f"a.status = 'resolved' AND NOT EXISTS (SELECT 1 FROM alerts f WHERE f.dedup_key = {_FIRING_OF_RESOLVED})"
    f" AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.alert_key IN (a.dedup_key, {_FIRING_OF_RESOLVED}))"
)

#: Execution statuses retention never deletes, whatever their age: unfinished (pending, running),
#: or waiting for a human (awaiting_approval, which ends by its deadline anyway).
KEPT = "('pending', 'running', 'awaiting_approval')"
