"""The playbook index (issue 17: 1,000 playbooks matched in microseconds) never changes an answer.

Whatever the playbooks' matchers (equalities on alertname or other labels, empty values that
select a missing label, regexes, negations, none at all) and whatever the alert's labels, the
indexed lookup returns exactly the playbooks a scan of every playbook would, in load order.
"""

from __future__ import annotations

import random

import pytest

from remediator.core.alerts import Alert
from remediator.core.matchers import Matcher
from remediator.core.playbooks import Match, Playbook, PlaybookSet, Target

NAMES = ["alertname", "severity", "team", "namespace"]
VALUES = ["", "A", "B", "C", "crit", "shop"]


def scanned(books: PlaybookSet, alert: Alert) -> list[Playbook]:
    return [p for p in books.playbooks if p.match.selects(alert)]


def random_playbook(rng: random.Random, n: int) -> Playbook:
    matchers = []
    for _ in range(rng.randint(0, 3)):
        op = rng.choice(["=", "=", "!=", "=~", "!~"])
        value = rng.choice(VALUES) if op in ("=", "!=") else rng.choice(["A|B", ".*", "", "c.*"])
        matchers.append(Matcher.create(rng.choice(NAMES), op, value))
    status = rng.choice(["firing", "resolved", "any"])
    return Playbook(f"pb-{n}", Match(tuple(matchers), status), Target("Deployment", "shop", "x"), ())  # type: ignore[arg-type]


def random_alert(rng: random.Random) -> Alert:
    labels = {name: rng.choice(VALUES) for name in NAMES if rng.random() < 0.7}
    return Alert("f", rng.choice(["firing", "resolved"]), {k: v for k, v in labels.items() if v})  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
def test_the_index_answers_exactly_as_a_scan_in_load_order(seed: int) -> None:
    rng = random.Random(seed)
    books = PlaybookSet(tuple(random_playbook(rng, n) for n in range(rng.randint(0, 60))))
    for _ in range(200):
        alert = random_alert(rng)
        assert books.matching(alert) == scanned(books, alert)


def test_an_empty_equality_selects_alerts_without_that_label() -> None:
    missing_team = Playbook("no-team", Match((Matcher.create("team", "=", ""),)), Target("Deployment", "s", "x"), ())
    books = PlaybookSet((missing_team,))
    assert books.matching(Alert("f", "firing", {"alertname": "X"})) == [missing_team]
    assert books.matching(Alert("f", "firing", {"alertname": "X", "team": "a"})) == []


def test_a_thousand_playbooks_are_filed_by_alertname() -> None:
    books = PlaybookSet(tuple(
        Playbook(f"pb-{n}", Match((Matcher.create("alertname", "=", f"Alert{n}"),)), Target("Deployment", "s", "x"), ())
        for n in range(1000)
    ))
    assert books._index.candidates({"alertname": "Alert7"}) == [7]  # one candidate tried, not a thousand
    assert [p.name for p in books.matching(Alert("f", "firing", {"alertname": "Alert7"}))] == ["pb-7"]
