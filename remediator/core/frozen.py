"""Frozen dataclasses whose ``__init__`` writes the instance dictionary directly.

Why: a frozen dataclass's generated ``__init__`` sets every field through
``object.__setattr__`` (its own ``__setattr__`` refuses), about 0.3 µs a field, three
to four times what a plain assignment costs.  An alert's way through the daemon makes a
dozen such records (the alert, its delivery, the claim, the decision, the steps and
their results), and in a long replay their constructors were a fourteenth of the CPU.

:func:`fast_frozen` keeps everything else the dataclass generated (equality, hashing,
``repr``, ``replace``, the refusal to set or delete attributes) and swaps only the
constructor for one with the same signature, defaults and default factories that
updates ``__dict__`` in one call.  ``tests/core/test_frozen.py`` checks that each
decorated class builds the same instances both ways.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_FACTORY = object()  # stands for "use the field's default_factory" in a generated signature


def fast_frozen(cls: type[T]) -> type[T]:
    """Give the frozen dataclass ``cls`` the direct constructor (apply it above ``@dataclass``).

    Only what the generated one does is supported: positional-or-keyword fields (``kw_only``
    too), defaults, default factories, ``init=False`` fields with a default and
    ``__post_init__``; slots and ``InitVar`` are refused at import, not mishandled.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"{cls.__name__}: fast_frozen is for frozen dataclasses")
    if "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_frozen needs an instance __dict__ (no slots)")
    names: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    values: list[str] = []
    for i, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        default = f"_d{i}"
        if f.default is not dataclasses.MISSING:
            names[default] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_f{i}"] = f.default_factory
            names[default] = _FACTORY
        if not f.init:
            if f.default_factory is not dataclasses.MISSING:
                values.append(f"{f.name!r}: _f{i}()")
            continue  # a plain default is the class attribute's (as generated); none at all: unset
        arg = f.name if default not in names else f"{f.name}={default}"
        (keyword if f.kw_only else positional).append(arg)
        if names.get(default) is _FACTORY:
            body.append(f"  if {f.name} is _FACTORY: {f.name} = _f{i}()")
        values.append(f"{f.name!r}: {f.name}")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    post = "\n  self.__post_init__()" if hasattr(cls, "__post_init__") else ""
    source = (f"def __init__({signature}):\n" + "".join(line + "\n" for line in body)
              + f"  self.__dict__.update({{{', '.join(values)}}}){post}\n")
    exec(source, names)
    init = names["__init__"]
    if _parameters(init) != _parameters(cls.__init__):
        raise TypeError(f"{cls.__name__}: its constructor takes what fast_frozen cannot build (InitVar?)")
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - a class's method replaced, as a decorator does
    return cls


def _parameters(function: Any) -> tuple[str, ...]:
    """A function's parameter names, in order (from its code: both are plain functions)."""
    code = function.__code__
    return tuple(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
