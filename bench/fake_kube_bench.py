"""Fake Kubernetes API benchmark: loading and listing N Deployments must be linear in N.

Each Deployment (2 replicas) is applied the way tests seed the fake (``cluster.apply``:
the API's create, then the controllers run until the cluster is settled: a ReplicaSet,
two pods, all ready); then the whole namespace is listed over HTTP, raw and through
kubernetes-asyncio's typed client.  Once loaded, one more write (a scale of one
Deployment) and an idle reconcile must not depend on how many other objects exist.

Fails (exit 1) if loading and listing 1,000 Deployments takes more than 5 s of CPU, or
if the per-Deployment cost at the largest N is more than 3x that at the smallest.  CPU
time is the criterion because the machine is shared: wall time is printed beside it.

    python bench/fake_kube_bench.py [--sizes 100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client

from remediator.testing.kube import FakeCluster, running_fake_kube

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.summary import emit, quick

NAMESPACE = "bench"
BUDGET_CPU_SECONDS = 5.0
MAX_GROWTH = 3.0


def manifest(name: str) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]}}},
    }


@dataclass
class Clocks:
    """Wall and CPU seconds of one measured block."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clocks:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


async def measure(n: int) -> dict[str, Clocks]:
    cluster = FakeCluster()
    out: dict[str, Clocks] = {}
    with Clocks() as out["load"]:
        for i in range(n):
            cluster.apply(manifest(f"web-{i:04d}"))
    assert len(cluster.objects("pods", NAMESPACE)) == 2 * n
    async with running_fake_kube(cluster) as kube:
        url = f"{kube.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        async with aiohttp.ClientSession() as http:
            with Clocks() as out["list (raw HTTP)"]:
                async with http.get(url) as response:
                    listed = await response.json()
        assert len(listed["items"]) == n
        with Clocks() as out["list (typed client)"]:
            typed = await client.AppsV1Api(kube.api).list_namespaced_deployment(NAMESPACE)
        assert len(typed.items) == n
    with Clocks() as out["one more write"]:
        cluster.patch("deployments", NAMESPACE, "web-0000", "application/merge-patch+json", {"spec": {"replicas": 3}})
    with Clocks() as out["idle reconcile"]:
        cluster.reconcile()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,300" if quick() else "100,1000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print("| Deployments | step | wall s | CPU s | CPU ms per Deployment |")
    print("|---:|---|---:|---:|---:|")
    per_deployment: dict[int, float] = {}
    load_and_list: dict[int, float] = {}
    for n in sizes:
        result = asyncio.run(measure(n))
        for step, clocks in result.items():
            per = f"{clocks.cpu / n * 1000:.2f}" if step == "load" else ""
            print(f"| {n} | {step} | {clocks.wall:.3f} | {clocks.cpu:.3f} | {per} |")
        per_deployment[n] = result["load"].cpu / n
        emit("fake kube", f"load {n:,} Deployments", round(per_deployment[n] * 1000, 2), "CPU ms per Deployment")
        load_and_list[n] = result["load"].cpu + result["list (raw HTTP)"].cpu
    failures = []
    if 1000 in load_and_list and load_and_list[1000] > BUDGET_CPU_SECONDS:
        failures.append(f"1,000 Deployments took {load_and_list[1000]:.1f} s of CPU to load and list "
                        f"(budget {BUDGET_CPU_SECONDS:g} s)")
    smallest, largest = min(sizes), max(sizes)
    growth = per_deployment[largest] / per_deployment[smallest]
    if growth > MAX_GROWTH:
        failures.append(f"cost per Deployment grew {growth:.1f}x from {smallest} to {largest}: not linear")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(f"ok: per-Deployment load cost {growth:.2f}x from {smallest} to {largest} Deployments")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
