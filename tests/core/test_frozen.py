"""fast_frozen builds the same instances as the dataclass's own constructor, and stays frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field

import pytest

from remediator.core.alerts import Alert, WebhookPayload
from remediator.core.decisions import Decision, DecisionKind
from remediator.core.frozen import fast_frozen
from remediator.ports import StepContext


def _both(**namespace: object) -> tuple[type, type]:
    """The same frozen dataclass twice: as generated, and with fast_frozen's constructor."""
    def make() -> type:
        return dataclass(frozen=True)(type("Record", (), dict(namespace)))
    return make(), fast_frozen(make())


KINDS = {
    "__annotations__": {"a": "int", "b": "str", "c": "list[int]", "d": "int", "e": "int"},
    "b": "x",
    "c": field(default_factory=list),
    "d": field(default=4, kw_only=True),
    "e": field(default=5, init=False),
}


@pytest.mark.parametrize("args, kwargs", [((1,), {}), ((1, "y"), {}), ((1,), {"c": [2], "d": 7}),
                                          ((), {"a": 1, "b": "z", "d": 0})])
def test_same_instances_as_the_generated_constructor(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    plain, fast = _both(**KINDS)
    p, f = plain(*args, **kwargs), fast(*args, **kwargs)
    assert p.__dict__ == f.__dict__
    assert repr(p).replace("Record", "") == repr(f).replace("Record", "")
    assert dataclasses.replace(f, b="w").__dict__ == dataclasses.replace(p, b="w").__dict__


def test_each_default_factory_call_is_a_new_value() -> None:
    _, fast = _both(**KINDS)
    one, two = fast(1), fast(1)
    assert one.c == [] and one.c is not two.c


def test_the_same_errors_for_wrong_arguments() -> None:
    plain, fast = _both(**KINDS)
    for call in (lambda cls: cls(), lambda cls: cls(1, "x", [], 4), lambda cls: cls(1, e=3), lambda cls: cls(1, z=0)):
        with pytest.raises(TypeError):
            call(plain)
        with pytest.raises(TypeError):
            call(fast)


def test_still_frozen() -> None:
    _, fast = _both(**KINDS)
    record = fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.a = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del record.a
    hashable, hashable_fast = _both(__annotations__={"a": "int", "b": "str"})
    assert hash(hashable_fast(1, "x")) == hash(hashable(1, "x"))


def test_post_init_runs() -> None:
    seen = []
    namespace = {"__annotations__": {"a": "int"}, "__post_init__": lambda self: seen.append(self.a)}
    _, fast = _both(**namespace)
    fast(3)
    assert seen == [3]


def test_refuses_what_it_cannot_build() -> None:
    with pytest.raises(TypeError, match="frozen"):
        fast_frozen(dataclass(type("Mutable", (), {"__annotations__": {"a": "int"}})))
    with pytest.raises(TypeError, match="slots"):
        fast_frozen(dataclass(frozen=True, slots=True)(type("Slotted", (), {"__annotations__": {"a": "int"}})))
    with pytest.raises(TypeError, match="InitVar"):
        fast_frozen(dataclass(frozen=True)(type("WithInitVar", (), {"__annotations__": {"a": InitVar[int]},
                                                                   "__post_init__": lambda self, a: None})))


def test_the_daemons_records_keep_their_constructors() -> None:
    alert = Alert("f", "firing", {"a": "b"})
    assert alert.annotations == {} and alert.ends_at is None
    assert WebhookPayload("4", "firing", (alert,)).common_labels == {}
    d = Decision("k", "f", "p", "1", DecisionKind.NO_MATCH, "r", alert.starts_at)
    assert d.extra == {} and d.extra is not Decision("k", "f", "p", "1", DecisionKind.NO_MATCH, "r", d.at).extra
    assert StepContext.__init__.__qualname__ == "StepContext.__init__"
