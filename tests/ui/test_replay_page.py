"""The replay page: an uploaded export replayed by the CLI's engine (the same report, the same
``--compare``), bounded (size, time, one at a time), refused with a reason when it cannot run, and
never touching the live daemon: its store, its guardrails, its kill switch or its executor."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.app import create_app
from remediator.cli import main
from remediator.clock import VirtualClock
from remediator.core.decisions import PlannedStep
from remediator.ports import StepContext, StepResult
from remediator.runtime import RUNTIME
from remediator.store.tools import export_alerts
from remediator.ui.replay import ReplayLimits
from remediator.ui.views import UI
from tests.payloads import payload
from tests.pipeline.test_pipeline import received
from tests.replay import history as replay_history
from tests.replay.history import firing, write_history, write_playbooks
from tests.tokens import READ
from tests.ui.conftest import Client, csrf_of, sign_in

#: The replay tests' playbooks, with matchers that guarantee the labels their targets read.
GUARANTEED = """'namespace=~".+"', 'deployment=~".+"'"""
PLAYBOOKS = re.sub(r"(match: \{alertname: \w+)\}", lambda m: f"{m.group(1)}, matchers: [{GUARANTEED}]}}",
                   replay_history.PLAYBOOKS)
MULTIPART = "multipart/form-data; boundary=b"
LONGER_COOLDOWN = PLAYBOOKS.replace("cooldown: 5m", "cooldown: 15m")


class Counting:
    """The live executor: it must never be asked to run anything by a replay."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def run(self, step: PlannedStep, ctx: StepContext) -> StepResult:
        self.steps.append(step.action)
        return StepResult("ok", "done")


@pytest.fixture
def executor() -> Counting:
    return Counting()


@pytest.fixture
def loaded(tmp_path: Path) -> Path:
    """The live daemon's playbooks: the history's."""
    return write_playbooks(tmp_path / "loaded", PLAYBOOKS)


@pytest.fixture
async def client(settings_factory: Callable[..., Any], vclock: VirtualClock, executor: Counting,
                 loaded: Path) -> AsyncIterator[Client]:
    app = create_app(settings_factory(dry_run=False, playbooks=str(loaded)), clock=vclock,
                     executors=(executor, executor), start_worker=False)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return write_history(tmp_path / "history.jsonl")


def form(export: bytes | Path | None, *, fmt: str = "html", export_name: str = "history.jsonl",
         **sides: list[tuple[str, str]]) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)  # as a browser sends a form with a file input
    if export is not None:
        body = export.read_bytes() if isinstance(export, Path) else export
        data.add_field("export", io.BytesIO(body), filename=export_name, content_type="application/x-ndjson")
    for side, files in sides.items():
        for name, text in files:
            data.add_field(side, io.BytesIO(text.encode()), filename=name, content_type="application/yaml")
    data.add_field("format", fmt)
    return data


async def post(client: Client, data: aiohttp.FormData, status: int = 200, headers: Any = READ) -> str:
    r = await client.post("/ui/replay", data=data, headers=headers)
    text = await r.text()
    assert r.status == status, text
    return text


async def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], history: Path, before: str,
              after: str | None = None) -> str:
    """What ``remediator replay --format json`` prints (``--compare`` with ``after``), run as the
    command runs (its own event loop, so on a thread of its own here)."""
    argv = ["replay", str(history), "--format", "json", "--playbooks", str(write_playbooks(tmp_path / "cli-a", before))]
    if after is not None:
        argv += ["--compare", str(write_playbooks(tmp_path / "cli-b", after))]
    capsys.readouterr()
    assert await asyncio.to_thread(main, argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="kind-(\w+)">', html)


async def test_the_form_needs_a_read_token(client: Client) -> None:
    r = await client.get("/ui/replay")
    assert r.status == 401
    r = await client.post("/ui/replay", data=form(b"{}\n"))
    assert r.status == 401 and 'action="/ui/login"' in await r.text()
    r = await client.get("/ui/replay", headers=READ)
    html = await r.text()
    assert r.status == 200 and 'enctype="multipart/form-data"' in html
    assert client.app[RUNTIME].playbooks.current.version in html


async def test_an_upload_answers_the_clis_json(client: Client, tmp_path: Path, history: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    got = await post(client, form(history, fmt="json"))
    assert got == await cli(tmp_path, capsys, history, PLAYBOOKS)
    assert json.loads(got)["summary"]["decisions"]["executed"] == 6


async def test_the_page_shows_the_same_report(client: Client, tmp_path: Path, history: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    html = await post(client, form(history))
    expected = json.loads(await cli(tmp_path, capsys, history, PLAYBOOKS))
    assert rows(html) == [d["decision"] for d in expected["decisions"]]
    assert "Report: history.jsonl" in html and "the loaded set, 2 playbooks" in html
    for kind, n in expected["summary"]["decisions"].items():
        assert f'<span class="badge {kind}">{n} {kind}</span>' in html
    assert "resize_pool(by=10,container=app,env=POOL_SIZE,max=50)" in html


async def test_compare_shows_what_the_change_does(client: Client, tmp_path: Path, history: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    after = [("pool.yaml", LONGER_COOLDOWN)]
    got = await post(client, form(history, fmt="json", after=after))
    assert got == await cli(tmp_path, capsys, history, PLAYBOOKS, LONGER_COOLDOWN)
    assert json.loads(got)["summary"]["changes"] == {"changed_decision": 1, "suppressed_execution": 1}
    html = await post(client, form(history, after=after))
    assert re.findall(r'<tr class="change-(\w+)">', html) == ["suppressed_execution", "changed_decision"]
    assert "executed at 2026-11-22T10:06:00Z: resize_pool" in html and "→ cooldown: in cooldown until" in html
    assert 'data-total="2">2 changes' in html


async def test_compare_of_two_uploaded_sets(client: Client, tmp_path: Path, history: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Neither side need be the loaded set: the CLI's ``--playbooks DIR --compare DIR2``."""
    before = [("pool.yaml", LONGER_COOLDOWN)]
    after = [("pool.yaml", PLAYBOOKS)]
    got = await post(client, form(history, fmt="json", before=before, after=after))
    assert got == await cli(tmp_path, capsys, history, LONGER_COOLDOWN, PLAYBOOKS)
    assert json.loads(got)["summary"]["changes"] == {"changed_decision": 1, "new_execution": 1}


async def test_a_replay_never_touches_the_live_daemon(client: Client, history: Path, executor: Counting) -> None:
    rt = client.app[RUNTIME]
    await post(client, form(history))  # it executes six times and has a pause line
    assert executor.steps == []
    assert not await rt.guardrails.paused() and await rt.kill_switch.record() is None
    assert await rt.store.query_decisions(_everything()) == []
    # the live guardrails are untouched: the replay's executions took no cooldown from the live target
    r = await client.post("/webhooks/alertmanager", json=payload(firing("PoolHigh", "orders", 0)),
                          headers={"Authorization": "Bearer t1"})
    assert r.status == 200
    await rt.worker.drain()
    [decided] = await rt.store.query_decisions(_everything())
    assert decided["decision"] == "executed" and executor.steps == ["resize_pool"]


@pytest.mark.parametrize(
    ("export", "reason"),
    [
        (b'{"at": "2026-11-22T10:00:00Z", "control": "pause"}\nnot json\n',
         "history.jsonl:2: not valid JSON: Expecting value at column 1"),
        (b'{"control": "stop"}\n', "history.jsonl:1: control must be &#39;pause&#39; or &#39;resume&#39;"),
        (b"\xc3\x28\n", "history.jsonl:1: not valid UTF-8"),
    ],
)
async def test_a_bad_export_is_a_400_with_its_line(client: Client, export: bytes, reason: str) -> None:
    html = await post(client, form(export), 400)
    assert reason in html and "Report:" not in html


async def test_bad_playbooks_are_a_400_with_file_and_line(client: Client, history: Path) -> None:
    broken = PLAYBOOKS.replace("action: restart", "action: explode")
    html = await post(client, form(history, after=[("pool.yaml", broken)]), 400)
    [problem] = re.findall(r"after/pool\.yaml:\d+: [^\n<]*explode[^\n<]*", html)
    assert problem.startswith(f"after/pool.yaml:{broken.splitlines().index('  - action: explode') + 1}: ")
    html = await post(client, form(history, before=[("notes.txt", "hello")]), 400)
    assert "before: &#39;notes.txt&#39; is not a playbook file (*.yaml or *.yml)" in html
    html = await post(client, form(history, after=[("empty.yaml", "")]), 400)
    assert "after/empty.yaml:1: no playbooks found here" in html


async def test_an_oversized_upload_is_a_413_with_the_reason(client: Client, history: Path) -> None:
    client.app[UI].replay = ReplayLimits(max_export=1000, max_playbooks=100)
    html = await post(client, form(history), 413)
    assert "the export is larger than 1000 bytes" in html
    html = await post(client, form(b"\n", after=[("a.yaml", PLAYBOOKS)]), 413)
    assert "after: the playbooks are larger than 100 bytes" in html
    r = await client.post("/ui/replay", data=b"x" * 100_000, headers={**READ, "Content-Type": MULTIPART})
    assert r.status == 413 and "at most 1000" in await r.text()


async def test_a_malformed_or_incomplete_form_is_a_400(client: Client) -> None:
    for body, content_type in [(b"export=x", "application/x-www-form-urlencoded"),
                               (b"--b\r\nbroken", MULTIPART)]:
        r = await client.post("/ui/replay", data=body, headers={**READ, "Content-Type": content_type})
        assert r.status == 400 and "the form could not be read" in await r.text()
    html = await post(client, form(None), 400)
    assert "choose an export to replay" in html
    html = await post(client, form(b"", export_name=""), 400)  # what a browser sends for "no file chosen"
    assert "choose an export to replay" in html


async def test_a_replay_past_its_time_is_stopped(client: Client, history: Path) -> None:
    client.app[UI].replay = ReplayLimits(timeout=0)
    html = await post(client, form(history), 503)
    assert "The replay ran past its 0s limit and was stopped" in html


async def test_a_replay_stops_when_the_daemon_shuts_down(client: Client, history: Path) -> None:
    for hook in client.app.on_shutdown:  # what aiohttp runs first when the daemon stops
        await hook(client.app)
    html = await post(client, form(history), 503)
    assert "The daemon is shutting down" in html


async def test_one_replay_at_a_time(client: Client, history: Path) -> None:
    async with client.app[UI].replay.running:
        html = await post(client, form(history), 429)
    assert "A replay is running on this replica" in html
    await post(client, form(history))  # and once it has finished, the next one runs


async def test_a_signed_in_form_needs_its_csrf_token(client: Client, history: Path) -> None:
    await sign_in(client, "r1")
    html = await post(client, form(history), 403, headers=None)
    assert "CSRF token is missing or wrong" in html
    data = form(history)
    data.add_field("csrf", csrf_of(await (await client.get("/ui/replay")).text()))
    assert "Report: history.jsonl" in await post(client, data, headers=None)
    r = await client.post("/ui/replay", data=form(history), headers={"Origin": "http://evil.example"})
    assert r.status == 403


def _everything() -> Any:
    from remediator.ports import DecisionQuery

    return DecisionQuery(limit=100)


async def test_the_daemons_own_history_replays_as_an_export_of_it_would(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], vclock: VirtualClock, executor: Counting,
) -> None:
    """No export to upload: the alerts this daemon recorded over the chosen span are replayed, exactly as
    ``remediator export --since 24h`` then ``remediator replay`` would (and still nothing runs live)."""
    rt = client.app[RUNTIME]
    minute = 0
    for at_minute, line in replay_history.HISTORY:
        if "alerts" not in line:
            continue  # a control line (pause/resume) is the operator's, not something the daemon records
        await vclock.advance((at_minute - minute) * 60)
        minute = at_minute
        await rt.store.record_alerts(received(line, vclock))
    exported = tmp_path / "exported.jsonl"
    with exported.open("w") as out:
        count = await export_alerts(rt.store, vclock.now() - timedelta(hours=24), vclock.now(), out)
    assert count > 5

    data = form(None, fmt="json")
    data.add_field("history", "24h")
    got = await post(client, data)

    assert got == await cli(tmp_path, capsys, exported, PLAYBOOKS)
    assert json.loads(got)["summary"]["decisions"]["executed"] >= 1
    assert executor.steps == []
    shown = form(None)
    shown.add_field("history", "24h")
    assert "Report: history since 2026-11-" in await post(client, shown)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"history": "3h"}, "history: &#39;3h&#39; is not one of 1h, 6h, 24h, 7d"),
    ({}, "choose an export to replay"),
])
async def test_a_history_span_is_one_of_the_offered_ones(client: Client, fields: dict[str, str], reason: str) -> None:
    data = form(None)
    for name, value in fields.items():
        data.add_field(name, value)
    assert reason in await post(client, data, 400)


async def test_an_export_and_a_history_span_together_are_refused(client: Client, history: Path) -> None:
    data = form(history)
    data.add_field("history", "1h")
    assert "an export or this daemon&#39;s history, not both" in await post(client, data, 400)


async def test_uploaded_playbooks_are_parsed_off_the_event_loop(client: Client, history: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A few KB of YAML built to expand (aliases, many documents) held the loop, webhooks and probes
    included, for seconds: uploads are parsed on a thread, as the daemon's own reloads are."""
    import threading

    from remediator.ui import replay as ui_replay

    loop_thread, parsed_on = threading.get_ident(), []
    real = ui_replay.load_paths

    def load_paths(*args: Any, **kwargs: Any) -> Any:
        parsed_on.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(ui_replay, "load_paths", load_paths)
    await post(client, form(history, fmt="json", before=[("pool.yaml", LONGER_COOLDOWN)],
                            after=[("pool.yaml", PLAYBOOKS)]))
    assert len(parsed_on) == 2 and loop_thread not in parsed_on


@pytest.mark.parametrize(("extra", "reason"), [
    ([("note", b"x")], "unexpected field 'note'"),
    ([("format", b"json"), ("format", b"html")], "'format' is there twice"),
    ([("history", b"1h" * 600)], "history: longer than 1024 bytes"),
])
async def test_a_form_with_fields_it_does_not_have_is_refused_chunked_or_not(
        client: Client, history: Path, extra: list[tuple[str, bytes]], reason: str) -> None:
    """Only the files had a size limit, checked up front from Content-Length: a chunked body of endless
    fields (each kept, 1 KB a name) was read in full.  Fields are now the form's own, once, and short."""
    export = await asyncio.to_thread(history.read_bytes)
    for chunked in (False, True):
        data = aiohttp.FormData(default_to_multipart=True)
        data.add_field("export", io.BytesIO(export), filename="h.jsonl",
                       content_type="application/x-ndjson")
        for name, value in extra:
            data.add_field(name, value.decode())
        body = data()
        payload: Any = body
        if chunked:
            raw = b"".join([chunk async for chunk in _chunks(body)])

            async def stream(raw: bytes = raw) -> AsyncIterator[bytes]:
                yield raw

            payload = stream()
        r = await client.post("/ui/replay", data=payload, headers={**READ, "Content-Type": body.content_type})
        text = html.unescape(await r.text())
        assert r.status == 400 and reason in text, (chunked, r.status, text[-300:])


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    class Sink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        async def write(self, chunk: bytes) -> None:
            self.parts.append(bytes(chunk))

    sink = Sink()
    await body.write(sink)
    for part in sink.parts:
        yield part


async def test_an_alert_refused_alone_is_a_warning_and_the_rest_is_replayed(client: Client, tmp_path: Path) -> None:
    """As the webhook: one bad alert of a delivery is refused alone, the others are replayed.
    The whole upload was refused (a 400) for it."""
    bad = {**firing("PoolHigh", "cart", 0), "startsAt": "2026-12-31T23:59:60Z"}
    line = {"received_at": "2026-11-22T10:00:00Z",
            "payload": payload(firing("PoolHigh", "orders", 0), bad)}
    export = (json.dumps(line) + "\n").encode()
    reason = ("history.jsonl:1: body.alerts[1].startsAt: invalid timestamp '2026-12-31T23:59:60Z': "
              "second must be in 0..59")
    doc = json.loads(await post(client, form(export, fmt="json")))
    assert doc["warnings"] == [reason] and doc["summary"]["alerts"] == 1
    page = await post(client, form(export))
    assert rows(page) == ["executed"] and "1 alert refused alone" in page
    assert html.unescape(page).count(reason) == 1
