"""``python -m remediator.testing.kube``: the fake as a process, on real time.

Used to point the daemon or kubectl at a cluster by hand (a kubeconfig whose server
is the printed URL).  Exits 0 on SIGTERM/SIGINT, 2 when the state file is unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

from remediator.testing.kube.cluster import FakeCluster
from remediator.testing.kube.manifests import ManifestError
from remediator.testing.kube.server import FakeKubeServer
from remediator.testing.kube.status import ApiError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m remediator.testing.kube", description=__doc__)
    p.add_argument("--port", type=int, default=0, help="TCP port (0 picks a free one; the URL is printed)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--state", action="append", default=[], metavar="FILE",
                   help="Kubernetes manifests to apply at start (repeatable)")
    p.add_argument("--ready-delay", type=float, default=0.0, metavar="SECONDS",
                   help="seconds before a new pod becomes ready")
    p.add_argument("--watch-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="how long a watch without timeoutSeconds stays open")
    p.add_argument("--reconcile-interval", type=float, default=0.2, metavar="SECONDS")
    return p


async def serve(args: argparse.Namespace) -> int:
    cluster = FakeCluster(clock=time.time, ready_delay=args.ready_delay, seed=None)
    for path in args.state:
        try:
            result = cluster.load_state(path)
        except (ManifestError, ApiError) as exc:
            print(f"fake-kube: {path}: {exc}" if isinstance(exc, ApiError) else f"fake-kube: {exc}",
                  file=sys.stderr)
            return 2
        for skipped in result.skipped:
            print(f"fake-kube: {path}: skipped {skipped} (kind not served)", file=sys.stderr)
    server = FakeKubeServer(cluster, watch_timeout=args.watch_timeout, reconcile_interval=args.reconcile_interval)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url = await server.start(args.host, args.port)
    print(f"fake-kube listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    print("fake-kube stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(serve(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
