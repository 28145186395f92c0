"""A write the apiserver refused did not land: a step whose every write was refused changed nothing.

The pipeline runs ``on_failure`` (here a rollback of the live release) only for an execution that
may have changed something (the step's ``wrote``).  Sending a
write is not changing something: a 409, a 429 or a 422 certainly was not applied, so an execution
whose every write was refused must leave the release alone.  A write whose outcome is unknown (a
5xx, a timeout) still counts, even when the retries after it are refused.
"""

from __future__ import annotations

from typing import Any

from remediator.executors.kube import ROUTINE_ATTEMPTS
from tests.executor.conftest import OpenHarness
from tests.executor.harness import NS, playbook, steps_of, web

ROLLBACK = "- action: rollback\n"
PATCH = f"/namespaces/{NS}/deployments/web$"
SCALE = playbook("- action: scale\n  by: 2\n", on_failure=ROLLBACK)
SET_IMAGE = playbook('- action: set_image\n  container: app\n  image: "registry.example/web:2.1"\n',
                     on_failure=ROLLBACK)
RELEASE = "registry.example/web:2.0"


def two_releases(h: Any, name: str = "web") -> None:
    """1.0 then 2.0: an on_failure rollback would have a release to throw away."""
    h.cluster.apply(web(name, replicas=3))
    h.cluster.apply(web(name, replicas=3, image=RELEASE))


def image_of(h: Any, name: str = "web") -> str:
    image: str = h.cluster.get("deployments", NS, name)["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def nothing_changed(h: Any, ex: dict[str, Any], action: str) -> None:
    """The step failed and recorded no write and no intent, so on_failure did not run."""
    assert steps_of(ex) == [("main", action, "failed")]
    details = ex["results"][0]["details"]
    assert "wrote" not in details and "intent" not in details, details
    assert image_of(h) == RELEASE


async def test_a_scale_refused_with_409_on_every_attempt_does_not_roll_back(harness: OpenHarness) -> None:
    async with harness({"fix": SCALE}) as h:
        two_releases(h)
        h.cluster.faults.conflict(method="PUT", path="/scale$", times=ROUTINE_ATTEMPTS)
        ex = await h.fire()
        puts = h.cluster.requests.matching("PUT", "/scale$")
        assert [p.status for p in puts] == [409] * ROUTINE_ATTEMPTS
        assert h.get()["spec"]["replicas"] == 3
        nothing_changed(h, ex, "scale")
        assert h.cluster.requests.matching("PATCH", PATCH) == []  # no rollback sent


async def test_a_set_image_throttled_on_its_last_attempt_does_not_roll_back(harness: OpenHarness) -> None:
    """The last attempt's refusal matters as much as the others' (tenacity's before_sleep never sees it)."""
    async with harness({"fix": SET_IMAGE}, retries=3) as h:
        two_releases(h)
        h.cluster.faults.throttle(method="PATCH", path=PATCH, retry_after=1, times=3)
        ex = await h.fire()
        assert [p.status for p in h.cluster.requests.matching("PATCH", PATCH)] == [429] * 3
        nothing_changed(h, ex, "set_image")


async def test_a_set_image_the_apiserver_finds_invalid_does_not_roll_back(harness: OpenHarness) -> None:
    invalid = 'spec.template.spec.containers[0].image: Invalid value: "registry.example/web:2.1": denied'
    async with harness({"fix": SET_IMAGE}) as h:
        two_releases(h)
        h.cluster.faults.fail(422, method="PATCH", path=PATCH, message=invalid)
        ex = await h.fire()
        assert [p.status for p in h.cluster.requests.matching("PATCH", PATCH)] == [422]
        assert invalid in ex["results"][0]["message"]
        nothing_changed(h, ex, "set_image")


async def test_a_write_of_unknown_outcome_still_counts_when_the_retries_after_it_are_refused(
    harness: OpenHarness,
) -> None:
    """web: every write refused, nothing changed.  api: the first write answered 500 (it may have landed),
    the retries refused: the step may have changed api, so on_failure rolls it back."""
    async with harness({"fix": SET_IMAGE}, retries=3) as h:
        two_releases(h)
        two_releases(h, "api")
        h.cluster.faults.throttle(method="PATCH", path=PATCH, retry_after=1, times=3)
        refused = await h.fire()
        nothing_changed(h, refused, "set_image")
        api = f"/namespaces/{NS}/deployments/api$"
        h.cluster.faults.server_error(500, method="PATCH", path=api)
        h.cluster.faults.throttle(method="PATCH", path=api, retry_after=1, times=2)
        generation = h.cluster.get("deployments", NS, "api")["metadata"]["generation"]
        uncertain = await h.fire("api")
        details = uncertain["results"][0]["details"]
        assert details["wrote"] is True
        uid = h.cluster.get("deployments", NS, "api")["metadata"]["uid"]
        assert details["intent"] == {"image": "registry.example/web:2.1", "from": RELEASE, "generation": generation,
                                     "uid": uid}
        assert steps_of(uncertain) == [("main", "set_image", "failed"), ("on_failure", "rollback", "ok")]
        assert image_of(h, "api") == "registry.example/web:1.0"
