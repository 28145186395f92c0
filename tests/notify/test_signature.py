"""Acceptance 3: the webhook signature verifies with the documented algorithm; tampering does not."""

from __future__ import annotations

import hashlib
import hmac

from remediator.clock import VirtualClock
from remediator.notify.channels import Channel
from remediator.notify.webhook import verify_signature
from tests.notify.helpers import running_dispatcher, sample_decision
from tests.notify.receivers import Receiver, Seen, settle

SECRET = "correct horse battery staple"


async def signed_request(clock: VirtualClock, secret: str = SECRET) -> Seen:
    async with Receiver(clock) as rx:
        channel = Channel("h", "webhook", rx.url(), secret=secret, events=("failed",))
        async with running_dispatcher(clock, channel) as d:
            await d.notify("failed", sample_decision(), {"channels": ("h",)})
            await settle(clock, d)
    [seen] = rx.requests
    return seen


async def test_the_signature_verifies_with_the_documented_algorithm(vclock: VirtualClock) -> None:
    seen = await signed_request(vclock)
    ts, signature = seen.headers["X-Remediator-Timestamp"], seen.headers["X-Remediator-Signature"]
    # the documented algorithm, independently: v1=hex(HMAC-SHA256(secret, f"{timestamp}.{raw body}"))
    expected = hmac.new(SECRET.encode(), f"{ts}.".encode() + seen.body, hashlib.sha256).hexdigest()
    assert signature == f"v1={expected}"
    assert 0 <= seen.wall - int(ts) <= 1  # signed on the clock, just before it arrived (settle steps 1s)
    assert verify_signature(SECRET, ts, seen.body, signature, now=seen.wall)
    assert verify_signature(SECRET, ts, seen.body, f"v1={'0' * 64}, {signature}", now=seen.wall)  # rotation


async def test_a_tampered_body_a_stale_timestamp_or_another_secret_does_not_verify(vclock: VirtualClock) -> None:
    seen = await signed_request(vclock)
    ts, signature = seen.headers["X-Remediator-Timestamp"], seen.headers["X-Remediator-Signature"]
    tampered = seen.body.replace(b'"dry_run":false', b'"dry_run":true')
    assert tampered != seen.body
    assert not verify_signature(SECRET, ts, tampered, signature, now=seen.wall)
    assert not verify_signature(SECRET, ts, seen.body + b" ", signature, now=seen.wall)
    signed_at = int(ts)
    assert not verify_signature(SECRET, ts, seen.body, signature, now=signed_at + 301)  # replayed later
    assert not verify_signature(SECRET, ts, seen.body, signature, now=signed_at - 301)  # from the future
    assert verify_signature(SECRET, ts, seen.body, signature, now=signed_at + 299)
    assert not verify_signature(SECRET, str(int(ts) + 1), seen.body, signature, now=seen.wall)
    assert not verify_signature("another secret", ts, seen.body, signature, now=seen.wall)
    assert not verify_signature(SECRET, "yesterday", seen.body, signature, now=seen.wall)
    assert not verify_signature(SECRET, ts, seen.body, "", now=seen.wall)


async def test_without_a_secret_requests_carry_a_timestamp_but_no_signature(vclock: VirtualClock) -> None:
    seen = await signed_request(vclock, secret="")
    assert "X-Remediator-Timestamp" in seen.headers
    assert "X-Remediator-Signature" not in seen.headers
