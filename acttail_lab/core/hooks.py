"""One lifecycle for every forward hook of the package: the :func:`hooks` context manager.

Every forward pre-hook and forward hook that acttail_lab puts on a torch
module goes through :func:`hooks`: it registers them all on entry and removes
them all on exit, also when the body raises and when registration fails part
way (the hooks registered so far are removed before the error propagates).
No other module calls ``register_forward_pre_hook`` / ``register_forward_hook``.

Usage::

    with hooks(pre=[(layer, grab)], post=[(gate, cut, True)]):
        model(ids)
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from torch import nn


class Hook(NamedTuple):
    """One hook: ``fn`` on ``module``; ``with_kwargs`` passes the forward's keyword arguments too.

    Forward pre-hook: ``fn(module, args)`` or, with kwargs, ``fn(module, args, kwargs)``;
    returns None (input unchanged) or the new args (new ``(args, kwargs)`` with kwargs).
    Forward hook: ``fn(module, args, output)`` or ``fn(module, args, kwargs, output)``;
    returns None (output unchanged) or the new output.
    """

    module: nn.Module
    fn: Callable
    with_kwargs: bool = False


def _as_hook(item, with_kwargs: bool) -> Hook:
    """A :class:`Hook` from a Hook, a ``(module, fn)`` pair or a ``(module, fn, with_kwargs)`` triple."""
    if isinstance(item, Hook):
        return item
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise TypeError(f"A hook is (module, fn) or (module, fn, with_kwargs), got {item!r}.")
    return Hook(item[0], item[1], bool(item[2]) if len(item) == 3 else with_kwargs)


@contextlib.contextmanager
def hooks(pre: Iterable = (), post: Iterable = (), *, with_kwargs: bool = False) -> Iterator[list]:
    """Forward pre-hooks and forward hooks installed for the body of a ``with`` block.

    Args:
        pre: forward pre-hooks, each a :class:`Hook`, ``(module, fn)`` or
            ``(module, fn, with_kwargs)``; registered in this order (torch runs
            the hooks of one module in registration order).
        post: forward hooks, same forms; registered after every pre-hook.
        with_kwargs: the flag of the items given as pairs (default False).
    Yields:
        The list of torch handles, in registration order.
    On exit (normal, exception, or a registration that fails part way) every
    registered hook is removed.
    """
    handles: list = []
    try:
        for item in pre:
            h = _as_hook(item, with_kwargs)
            handles.append(h.module.register_forward_pre_hook(h.fn, with_kwargs=h.with_kwargs))
        for item in post:
            h = _as_hook(item, with_kwargs)
            handles.append(h.module.register_forward_hook(h.fn, with_kwargs=h.with_kwargs))
        yield handles
    finally:
        for handle in reversed(handles):
            handle.remove()
        handles.clear()
