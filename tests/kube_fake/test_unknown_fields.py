"""Unknown fields per ``fieldValidation``: Warn (the default) drops and warns, Ignore drops quietly, Strict refuses.

The Warn row is also in tests/contract (checked against kube-apiserver); these pin the other two modes.
"""

from __future__ import annotations

import aiohttp

from remediator.testing.kube import FakeKube
from tests.kube_fake.helpers import deployment

SMP = "application/strategic-merge-patch+json"
PATCH = b'{"spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "app", "bar": 2}]}}}}'


async def send(fake_kube: FakeKube, validation: str | None) -> tuple[int, list[str], dict[str, object]]:
    url = f"{fake_kube.url}/apis/apps/v1/namespaces/shop/deployments/web"
    query = {"fieldValidation": validation} if validation else {}
    async with aiohttp.ClientSession() as http, http.patch(
        url, data=PATCH, params=query, headers={"Content-Type": SMP}
    ) as response:
        return response.status, response.headers.getall("Warning", []), await response.json()


async def test_warn_is_the_default_and_names_each_field(fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment())
    status, warnings, _ = await send(fake_kube, None)
    assert status == 200
    assert warnings == ['299 - "unknown field \\"spec.foo\\""',
                        '299 - "unknown field \\"spec.template.spec.containers[0].bar\\""']
    stored = fake_kube.cluster.get("deployments", "shop", "web")
    assert stored is not None and "foo" not in stored["spec"]


async def test_ignore_drops_them_without_a_word(fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment())
    status, warnings, _ = await send(fake_kube, "Ignore")
    assert (status, warnings) == (200, [])
    stored = fake_kube.cluster.get("deployments", "shop", "web")
    assert stored is not None and "bar" not in stored["spec"]["template"]["spec"]["containers"][0]


async def test_strict_refuses_the_request_and_changes_nothing(fake_kube: FakeKube) -> None:
    fake_kube.cluster.apply(deployment())
    version = fake_kube.cluster.resource_version
    status, warnings, body = await send(fake_kube, "Strict")
    assert status == 422 and warnings == []
    assert body["message"] == ('Deployment.apps "web" is invalid: strict decoding error: unknown field "spec.foo", '
                               'unknown field "spec.template.spec.containers[0].bar"')
    assert fake_kube.cluster.resource_version == version
