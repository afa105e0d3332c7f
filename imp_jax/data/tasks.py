"""The tasks a run can learn, by the name ``config.data.name`` gives them: a registry.

Each :class:`Task` says what kind of data it is and owns what only it knows: an image dataset its
per-channel statistics, a Gaussian-mixture task its exact conditional label distribution
p(y|x) (:mod:`imp_jax.data.mixtures`), so that no caller needs to test names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from imp_jax.data import mixtures

Stats = tuple[tuple[float, ...], tuple[float, ...]]

# ImageNet's per-channel (mean, std), with which the reference code standardises CIFAR-10.
IMAGENET: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: an image dataset read through tensorflow-datasets, or a Gaussian mixture.

    Attributes:
      name: the registry name (``config.data.name``).
      stats: image datasets: the (mean, std) per channel of the training images scaled to
        [0, 1]; None for mixtures.
      mixture: mixtures: the kind of :mod:`imp_jax.data.mixtures` (``"linear"`` or ``"xor"``).
      arrays: a user's own data: returns ``(x_train, y_train, x_test, y_test, num_classes)``,
        inputs as the model takes them (see :func:`register_arrays`); None for the others.
    """

    name: str
    stats: Stats | None = None
    mixture: str | None = None
    arrays: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] | None = (
        dataclasses.field(default=None, compare=False))

    @property
    def is_mixture(self) -> bool:
        return self.mixture is not None

    @property
    def rgb(self) -> bool:
        """Whether the images have three channels (ImageNet statistics apply)."""
        return self.stats is not None and len(self.stats[0]) == 3

    def sample(self, key: jax.Array, nu: float, n: int, dim: int) -> tuple[np.ndarray,
                                                                          np.ndarray]:
        """``n`` points and their clean labels (mixtures only, see :func:`mixtures.sample`)."""
        return mixtures.sample(key, self._kind(), nu, n, dim)

    def true_probs(self, nu: float, x: np.ndarray | jax.Array,
                   label_noise: float = 0.0) -> jax.Array:
        """The exact p(y|x) at ``x``, under ``label_noise`` (see :func:`mixtures.true_probs`)."""
        return mixtures.true_probs(self._kind(), nu, x, label_noise)

    def centres(self, nu: float, dim: int) -> np.ndarray:
        """The component means (see :func:`mixtures.centres`)."""
        return mixtures.centres(self._kind(), nu, dim)

    def _kind(self) -> str:
        if self.mixture is None:
            raise ValueError(f"{self.name} is not a Gaussian-mixture task")
        return self.mixture


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("mnist", stats=((0.1307,), (0.3081,))),
    Task("fashion_mnist", stats=((0.2860,), (0.3530,))),
    Task("cifar10", stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))),
    Task("cifar100", stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
    Task("mixture_linear", mixture="linear"),
    Task("mixture_xor", mixture="xor"),
)}


def register_arrays(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, num_classes: int | None = None) -> Task:
    """Makes ``name`` a valid ``data.name`` holding these arrays (inputs as the model takes
    them, integer labels from 0); ``num_classes`` defaults to the largest label + 1. Label
    noise, subsets and validation splits apply to them as to any dataset."""
    arrays = (np.asarray(x_train), np.asarray(y_train, np.int32), np.asarray(x_test),
              np.asarray(y_test, np.int32))
    k = int(num_classes or max(arrays[1].max(), arrays[3].max()) + 1)
    TASKS[name] = Task(name, arrays=lambda: (*arrays, k))
    return TASKS[name]


def get(name: str) -> Task:
    """The task called ``name``; ValueError naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {tuple(TASKS)}")
    return TASKS[name]
