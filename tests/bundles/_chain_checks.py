"""Shared check of the config-transform tests: a chain spelled out in a bundle config against the library's chain."""

from __future__ import annotations

import copy

import numpy as np
import torch
from monai.transforms import Compose


def assert_same_chains(new: Compose, old: Compose, item: dict, draws: int = 1, seed: int | None = None) -> list[dict]:
    """Apply both chains ``draws`` times to ``item`` (after seeding both with ``seed``): the steps must be of the same
    types in the same order, and every output (each crop of a list of crops) the same keys, tensor (or array) types,
    dtypes and values. Returns the outputs of ``new``, one dict per output or crop."""
    assert [type(t) for t in new.transforms] == [type(t) for t in old.transforms]
    if seed is not None:
        new.set_random_state(seed)
        old.set_random_state(seed)
    outputs = []
    for _ in range(draws):
        a, b = new(copy.deepcopy(item)), old(copy.deepcopy(item))
        a, b = (list(x) if isinstance(x, list) else [x] for x in (a, b))
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert sorted(x) == sorted(y)
            for key in x:
                if isinstance(x[key], torch.Tensor):
                    assert type(x[key]) is type(y[key]) and x[key].dtype == y[key].dtype, key
                    assert torch.equal(x[key], y[key]), key
                elif isinstance(x[key], np.ndarray):
                    assert type(y[key]) is np.ndarray and x[key].dtype == y[key].dtype, key
                    assert np.array_equal(x[key], y[key]), key
                else:
                    assert x[key] == y[key], key
        outputs += a
    return outputs


def refusal(build, *args) -> str:
    """The message of the error ``build(*args)`` raises, unwrapped from the config parser's ``RuntimeError`` chain."""
    try:
        build(*args)
    except Exception as err:  # noqa: BLE001 - any refusal; the caller compares the messages
        while err.__cause__ is not None:
            err = err.__cause__
        return str(err)
    raise AssertionError("nothing was refused")


def assert_configs_avoid(configs, names) -> None:
    """No config in the folder ``configs`` (but ``metadata.json``, whose changelog names the old calls) holds any
    of ``names``: the chains are spelled out, not built by Python calls."""
    for path in sorted(configs.glob("*.json")):
        if path.name != "metadata.json":
            text = path.read_text()
            assert not [name for name in names if name in text], path.name
