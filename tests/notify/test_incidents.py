"""PagerDuty incidents as an on-call human expects them: every failed remediation pages, the
daemon never silences a page, and the alert resolving closes every incident it caused.

The real pipeline runs against a local PagerDuty that keeps incidents as the Events API v2
documents them, including that an acknowledged incident "won't generate any additional
notifications, even if it receives new trigger events" (``PagerDuty.pages``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from remediator.clock import VirtualClock
from remediator.core.decisions import execution_id
from remediator.notify.pagerduty import dedup_key
from remediator.runtime import Runtime
from tests.notify.conftest import OpenRuntime, deliver
from tests.notify.receivers import PagerDuty, Receiver, settle
from tests.payloads import alert_json, payload
from tests.pipeline.test_pipeline import Recorder

KEY = "R" * 32
FP = "f1a9"
FIRST, SECOND = "2026-11-22T10:00:00Z", "2026-11-22T10:20:00Z"
PLAYBOOK = """
name: %s
match: {alertname: WebDown}
target: {kind: Deployment, namespace: shop, name: web}
guardrails: {cooldown: %s}
steps: [{action: restart}]
notify: [%s]
"""


def pd_channel(pd: PagerDuty) -> dict[str, Any]:
    return {"type": "pagerduty", "url": pd.url("/v2/enqueue"), "routing_key": KEY}


def webdown(starts_at: str, status: str = "firing") -> dict[str, Any]:
    ends_at = "2026-11-22T10:40:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return payload(alert_json({"alertname": "WebDown"}, status=status, starts_at=starts_at, ends_at=ends_at,
                              fingerprint=FP))


def incident(starts_at: str, playbook: str = "restart-web") -> str:
    return dedup_key(FP, playbook, execution_id(f"{FP}|{starts_at}|firing", playbook))


@asynccontextmanager
async def failing_with_pd_and_hook(
    vclock: VirtualClock, open_notify_runtime: OpenRuntime, cooldown: str, notify: str
) -> AsyncIterator[tuple[PagerDuty, Receiver, Runtime]]:
    """A runtime whose remediation fails, with PagerDuty and a webhook as channels."""
    async with (
        PagerDuty(vclock) as pd,
        Receiver(vclock) as hook,
        open_notify_runtime({"pd": pd_channel(pd), "hook": {"type": "webhook", "url": hook.url()}},
                            Recorder(fail={"restart"}), playbook=PLAYBOOK % ("restart-web", cooldown, notify)) as rt,
    ):
        yield pd, hook, rt


async def told(rt: Runtime, vclock: VirtualClock, raw: dict[str, Any]) -> None:
    await deliver(rt, raw)
    assert rt.notifications is not None
    await settle(vclock, rt.notifications)


async def test_a_second_failed_remediation_pages_though_the_first_page_was_acknowledged(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """The alert fires again (a new episode, no resolve between) and its remediation fails again.
    Keyed by alert + playbook, the second episode's 'started' acknowledged the open incident (the
    daemon silenced a page nobody had answered) and its failure then added to that acknowledged
    incident: nobody was paged.  Now each execution has its incident: the second failure pages,
    whoever acknowledged the first, and the daemon never acknowledges."""
    async with (
        PagerDuty(vclock) as pd,
        open_notify_runtime({"pd": pd_channel(pd)}, Recorder(fail={"restart"}),
                            playbook=PLAYBOOK % ("restart-web", "0s", "pd")) as rt,
    ):
        await told(rt, vclock, webdown(FIRST))
        [first] = pd.pages
        pd.acknowledge_by_hand(first)  # the on-call is on it
        await told(rt, vclock, webdown(SECOND))
        assert "acknowledge" not in [action for action, _ in pd.seen]
        assert len(pd.pages) == 2, "the second failure paged nobody"
        assert pd.open == {first: "acknowledged", pd.pages[1]: "triggered"}
    assert pd.pages == [incident(FIRST), incident(SECOND)]


async def test_started_pages_only_when_asked_and_the_execution_closes_its_own_incident(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """``on_started: trigger``: the execution's incident opens as automation acts and its
    success resolves it; an earlier failure's incident is not the success's to close."""
    cluster = Recorder(fail={"restart"})
    async with (
        PagerDuty(vclock) as pd,
        open_notify_runtime({"pd": {**pd_channel(pd), "on_started": "trigger"}}, cluster,
                            playbook=PLAYBOOK % ("restart-web", "0s", "pd")) as rt,
    ):
        await told(rt, vclock, webdown(FIRST))  # fails: started paged, the failure adds to it
        cluster.fail.clear()
        await told(rt, vclock, webdown(SECOND))  # succeeds
        assert len(pd.pages) == 2
        assert pd.open == {pd.pages[0]: "triggered"}  # still broken as far as anyone knows: the alert fires
    assert pd.pages == [incident(FIRST), incident(SECOND)]


async def test_a_flapping_alert_resolving_closes_the_incident_of_an_earlier_episode(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """Episode 1 fails and pages; episode 2 fires with no resolve between and is refused by the
    cooldown; episode 2 resolves.  Only episode 2's execution (there is none) used to be told, and
    episode 1's incident stayed open, paging, for an alert gone."""
    async with failing_with_pd_and_hook(vclock, open_notify_runtime, "1h", "pd, hook") as (pd, hook, rt):
        await told(rt, vclock, webdown(FIRST))
        await told(rt, vclock, webdown(SECOND))  # cooldown: skipped
        assert len(pd.open) == 1
        await told(rt, vclock, webdown(SECOND, "resolved"))
        assert pd.open == {}, "an incident left open for an alert gone"
        assert [r.json()["event"] for r in hook.requests] == ["started", "failed", "resolved"]
        assert hook.requests[-1].json()["execution"]["id"] == execution_id(f"{FP}|{FIRST}|firing", "restart-web")
        # the next resolve of the alert has nothing more to close: its earlier episodes were told
        await told(rt, vclock, webdown("2026-11-22T11:00:00Z"))
        await told(rt, vclock, webdown("2026-11-22T11:00:00Z", "resolved"))
    assert [r.json()["event"] for r in hook.requests] == ["started", "failed", "resolved"]
    assert [action for action, _ in pd.seen] == ["trigger", "resolve"]


async def test_an_incident_is_resolved_though_its_playbook_was_renamed_or_its_notify_list_changed(
    tmp_path: Path, vclock: VirtualClock, open_notify_runtime: OpenRuntime
) -> None:
    """The resolve used to go to the channels of the playbook as loaded now, by the name it has
    now: an incident opened before a rename, or before PagerDuty left its ``notify`` list, stayed
    open.  The execution's audit says which channels it told."""
    async with failing_with_pd_and_hook(vclock, open_notify_runtime, "0s", "pd") as (pd, _hook, rt):
        await told(rt, vclock, webdown(FIRST))
        assert rt.notifications is not None
        await rt.notifications.join()  # the trigger's outcome is in the execution's audit
        (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK % ("restart-web-v2", "0s", "hook"))
        assert rt.playbooks.reload()
        await told(rt, vclock, webdown(FIRST, "resolved"))
        assert pd.open == {}
        # and a playbook still loaded under its name, whose notify list changed
        await told(rt, vclock, webdown(SECOND))
        await rt.notifications.join()
        assert pd.open == {}  # restart-web-v2 tells the hook only
        (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK % ("restart-web-v2", "0s", "pd"))
        assert rt.playbooks.reload()
        await told(rt, vclock, webdown("2026-11-22T11:00:00Z"))
        await rt.notifications.join()
        (tmp_path / "pb" / "p.yaml").write_text(PLAYBOOK % ("restart-web-v2", "0s", "hook"))
        assert rt.playbooks.reload()
        await told(rt, vclock, webdown("2026-11-22T11:00:00Z", "resolved"))
        assert pd.open == {}
    assert pd.pages == [incident(FIRST), incident("2026-11-22T11:00:00Z", "restart-web-v2")]
