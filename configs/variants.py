"""What the config files share: a config as its fields, and its variants (``configs/NAME.py:ARG``)
as the fields they change."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from imp_jax.run.config import base_config, set_field

Fields = Mapping[str, Any]
Variant = Fields | Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]


def apply(config: ml_collections.ConfigDict, fields: Fields) -> ml_collections.ConfigDict:
    """Sets every dotted field of ``fields`` (e.g. ``{"train.epochs": 2}``) in ``config``."""
    for key, value in fields.items():
        set_field(config, key, value)
    return config


def select(config: ml_collections.ConfigDict, arg: str | None,
           **variants: Variant) -> ml_collections.ConfigDict:
    """``config`` as variant ``arg`` changes it (its fields, or a function of the config);
    ``config`` itself without ``arg``.

    Raises:
      ValueError: an unknown variant, naming the known ones.
    """
    if not arg:
        return config
    if arg not in variants:
        raise ValueError(f"unknown variant {arg!r} of {config.name}; expected "
                         f"{' or '.join(map(repr, variants))}")
    variant = variants[arg]
    return variant(config) if callable(variant) else apply(config, variant)


def build(fields: Fields, arg: str | None = None, **variants: Variant
          ) -> ml_collections.ConfigDict:
    """The base config with ``fields`` set, as variant ``arg`` (see :func:`select`)."""
    return select(apply(base_config(), fields), arg, **variants)
