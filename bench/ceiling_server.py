"""The ceiling for intake: the least a server can do with an Alertmanager webhook and stay durable.

A bare aiohttp server that reads each POST's body, parses it (``json.loads``), and inserts one
row per alert into one PostgreSQL table with ``executemany`` (one transaction, so one durable
commit, per POST) before answering 200.  No authentication, no validation, no deduplication,
no decisions: whatever ``remediator serve`` spends beyond this is the price of what it does
beyond it.  ``bench/ingest_bench.py`` runs it in its own process next to the daemon and sends
both the same payloads from the same load generator.

Run: .venv/bin/python bench/ceiling_server.py --port P --dsn postgresql://...?search_path=schema
(``GET /healthz`` answers once the table exists.)
"""

from __future__ import annotations

import argparse
import json

import asyncpg
from aiohttp import web

TABLE = """
CREATE TABLE IF NOT EXISTS ceiling_alerts (
    id BIGSERIAL PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    labels TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
INSERT = "INSERT INTO ceiling_alerts (fingerprint, status, starts_at, labels) VALUES ($1, $2, $3, $4)"


def app(pool: asyncpg.Pool) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        rows = [(a.get("fingerprint", ""), a["status"], a["startsAt"], json.dumps(a["labels"]))
                for a in payload["alerts"]]
        async with pool.acquire() as conn:
            await conn.executemany(INSERT, rows)  # atomic: one commit for the POST
        return web.json_response({"status": "accepted", "alerts": len(rows)})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    application = web.Application(client_max_size=16 * 1024 * 1024)
    application.router.add_post("/webhooks/alertmanager", webhook)
    application.router.add_get("/healthz", healthz)
    return application


async def serve(port: int, dsn: str) -> web.Application:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    await pool.execute(TABLE)
    application = app(pool)

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    application.on_cleanup.append(close_pool)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    web.run_app(serve(args.port, args.dsn), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
