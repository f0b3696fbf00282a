"""Every random state of a training run, captured and restored, so a resumed run makes the same draws.

A bundle run draws from the global RNGs (Python, numpy, torch: the data loader's shuffle seed, dropout, ...) and
from the private states of its random transforms (each MONAI ``Randomizable`` has its own ``R``, a numpy
``RandomState``) and batch preparers (a ``torch.Generator``). :func:`capture_random_states` records all of them in
a form that loads with ``torch.load(weights_only=True)``; :func:`restore_random_states` puts them back. The random
sources are found by walking the given objects (transform chains, datasets, preparers): their attributes that are
MONAI or monai_cluster objects, lists of them, a ``RandomState`` or a ``torch.Generator``, in a fixed order, so
the same configuration finds the same sources in the same order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["capture_random_states", "random_sources", "restore_random_states"]

_WALKED_PACKAGES = ("monai.", "monai_cluster.")


def _walkable(value: Any) -> bool:
    return type(value).__module__.startswith(_WALKED_PACKAGES) and not isinstance(value, (torch.Tensor, np.ndarray))


def random_sources(objects: Sequence[Any]) -> Iterator[np.random.RandomState | torch.Generator]:
    """The numpy ``RandomState`` and ``torch.Generator`` objects held by ``objects`` and their MONAI parts, in a
    fixed order (attributes by name, lists by position), once per attribute that holds one: a chain whose
    transforms share one state after a call (as :class:`~monai_cluster.transforms.MultiViewd` arranges) yields as
    many entries as before the call."""
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> Iterator:
        if isinstance(obj, (np.random.RandomState, torch.Generator)):
            yield obj  # once per place that holds it: transforms may share one state after a call, not before
            return
        if id(obj) in seen or depth > 12:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                if isinstance(item, (np.random.RandomState, torch.Generator, list, tuple)) or _walkable(item):
                    yield from walk(item, depth + 1)
            return
        if not _walkable(obj):
            return
        for name in sorted(getattr(obj, "__dict__", {})):
            value = obj.__dict__[name]
            if isinstance(value, (np.random.RandomState, torch.Generator, list, tuple)) or _walkable(value):
                yield from walk(value, depth + 1)

    for obj in objects:
        yield from walk(obj, 0)


def _numpy_state(state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip


def _numpy_tuple(state: dict) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def capture_random_states(objects: Sequence[Any] = ()) -> dict:
    """The global Python, numpy and torch (CPU and CUDA) states and those of every source in ``objects``."""
    sources = []
    for source in random_sources(objects):
        if isinstance(source, torch.Generator):
            sources.append({"kind": "torch", "state": source.get_state()})
        else:
            sources.append({"kind": "numpy", "state": _numpy_state(source.get_state())})
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": _numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sources": sources,
    }


def restore_random_states(states: dict, objects: Sequence[Any] = ()) -> None:
    """Put back what :func:`capture_random_states` recorded (the same ``objects`` of the same configuration).

    Raises:
        ValueError: when ``objects`` hold another number or kind of random sources than were recorded (the
            configuration changed), naming both.
    """
    sources = list(random_sources(objects))
    kinds = ["torch" if isinstance(s, torch.Generator) else "numpy" for s in sources]
    recorded = [s["kind"] for s in states["sources"]]
    if kinds != recorded:
        raise ValueError(
            f"the run holds random sources {kinds}, but the checkpoint recorded {recorded}: the transforms or "
            "preparers changed since the checkpoint was written, so its draws cannot be restored."
        )
    for source, saved in zip(sources, states["sources"]):
        if saved["kind"] == "torch":
            source.set_state(saved["state"])
        else:
            source.set_state(_numpy_tuple(saved["state"]))
    py = states["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np.random.set_state(_numpy_tuple(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
