"""Training and evaluation: the train step, and the wrappers that run it.

Read :func:`train_step` first: one SGD step of one replicate on one minibatch, all there is to
training (and :func:`eval_step`, the logits of one batch). Around it, each in one place:

* :func:`minibatch`: the examples of step ``i`` of an epoch, taken from the training set held
  once on device, in the replicate's order (the last batch padded at zero weight);
* :func:`for_each_replicate`: a function of one replicate made a function of a batch of them
  (a leading axis on every leaf of a :class:`TrainState`), as ``replicate_batching`` says;
* :func:`run_steps`: the loop over an epoch's minibatches, steps ``lo..hi-1``, with the loss
  and the first non-finite step of each replicate;
* :attr:`Trainer.run_steps`, :attr:`Trainer.predict`: the compiled programs, with the device
  layout (:mod:`imp_jax.core.parallel`) and the donated state. Masks are inputs, so every pruning
  level reuses one compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from imp_jax import masks as masks_lib
from imp_jax.core import augment as augment_lib
from imp_jax.core import convolutions, optimizers

PyTree = Any

# Ways to compute a batch of replicates in one compiled call (the same results, to float
# rounding): "vmap", one batched step for all of them (accelerators: bigger kernels, fewer
# launches); "unroll", a step of each replicate in turn in every iteration of the loop (CPU, small
# models: the per-step overhead is shared); "map", the replicates one after another, each through
# all its steps (CPU, larger models: one replicate's working set at a time stays in cache).
REPLICATE_BATCHING = ("vmap", "unroll", "map")
# One core's L2 cache, roughly: the activations of a step up to which "unroll" beats "map".
UNROLL_MAX_ACTIVATION_BYTES = 1 << 20
# "unroll" writes one copy of the step per replicate into the program: past this many, its
# compilation takes minutes, and "map" is chosen instead.
UNROLL_MAX_REPLICATES = 16


@flax.struct.dataclass
class TrainState:
    """Everything a training step needs; one pytree, checkpointed as a whole.

    Attributes:
      step: global training step (int32), drives the learning-rate schedule and data order.
      params: model parameters.
      opt_state: optimizer state (momentum); rebuilt at every rewind.
      masks: pruning masks, the params' structure with bool leaves.
      model_state: non-trained model variables (e.g. batch statistics); ``{}`` for an FCN.
      rng: uint32 key data of the data-order key of this replicate.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    masks: PyTree
    model_state: PyTree
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Optimisation hyperparameters (SGD as in the study).

    Attributes:
      batch_size: examples per step; the last batch of an epoch is smaller when the training set
        is not a multiple of it (as with PyTorch's DataLoader), so every example is seen once.
      lr: base learning rate.
      momentum: SGD momentum (0 for none).
      nesterov: Nesterov momentum.
      weight_decay: L2 penalty added to the gradient (PyTorch's convention), on all parameters.
      lr_boundaries: global steps at which the learning rate is multiplied by ``lr_decay``.
      lr_decay: the factor applied at each boundary.
      optimizer: the update direction, a name of :data:`imp_jax.core.optimizers.OPTIMIZERS`.
      schedule: the learning rate against the global step, a name of
        :data:`imp_jax.core.optimizers.SCHEDULES`.
      total_steps: the steps of a level (the cosine schedules' horizon).
      warmup_steps: the warm-up of ``warmup_cosine``.
    """

    batch_size: int
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_boundaries: tuple[int, ...] = ()
    lr_decay: float = 0.1
    optimizer: str = "sgd"
    schedule: str = "step"
    total_steps: int = 0
    warmup_steps: int = 0


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps in one pass over ``n_train`` examples, the last batch possibly partial."""
    return math.ceil(n_train / batch_size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


class Batch(NamedTuple):
    """One replicate's minibatch.

    Attributes:
      x: the examples (B, ...), as held on device (uint8 images are normalised by the step).
      y: their integer labels (B,).
      real: float32 (B,): 1 for the real examples, 0 for those padding a partial last batch (the
        loss weight of each example).
    """

    x: jax.Array
    y: jax.Array
    real: jax.Array


def train_step(state: TrainState, batch: Batch,
               trainer: Trainer) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step of one replicate on ``batch``: all there is to training.

    Augments and normalises the inputs as ``trainer`` says, takes the gradient of the weighted
    mean cross-entropy through the masked params, updates BatchNorm's statistics from the real
    examples only, and applies the masked momentum and weight decay at the learning rate of the
    global step.

    Returns:
      The new state and ``{"loss": the batch's mean training loss}``.
    """
    x = batch.x
    if trainer.normalisation is not None and trainer.augment:
        # Keyed by the replicate's data-order key and the step: a resumed run replays it.
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        x = augment_lib.augment_and_normalise(key, x, *trainer.normalisation)
    elif trainer.normalisation is not None:
        x = augment_lib.normalise(x, *trainer.normalisation)

    def loss_fn(params):
        variables = {"params": masks_lib.apply_mask(params, state.masks), **state.model_state}
        # Batch statistics (if any) are updated in train mode, from the real examples of the
        # batch only; they are never pruned.
        logits, model_state = trainer.model.apply(variables, x, train=True,
                                                  valid=batch.real > 0,
                                                  mutable=list(state.model_state))
        loss = jnp.sum(cross_entropy(logits, batch.y) * batch.real) / jnp.sum(batch.real)
        return loss, model_state

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = trainer.optimizer.update(grads, state.opt_state, state.params,
                                                  masks=state.masks)
    lr = trainer.learning_rate(state.step)
    params = jax.tree_util.tree_map(lambda p, u: p - (lr * u).astype(p.dtype),
                                    state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         model_state={**state.model_state, **model_state}), {"loss": loss}


def eval_step(params: PyTree, masks: PyTree, model_state: PyTree, x: jax.Array,
              trainer: Trainer) -> jax.Array:
    """The logits of one replicate (its masked ``params``, running statistics) on a batch."""
    if trainer.normalisation is not None:
        x = augment_lib.normalise(x, *trainer.normalisation)
    variables = {"params": masks_lib.apply_mask(params, masks), **model_state}
    return trainer.model.apply(variables, x, train=False)


def minibatch(x: jax.Array, y: jax.Array, order: jax.Array, i: jax.Array,
              batch_size: int) -> Batch:
    """Minibatch ``i`` of an epoch of one replicate: the examples ``order[i*B:(i+1)*B]``.

    Args:
      x: the training examples (n_train, ...), shared by all replicates.
      y: this replicate's labels (n_train,).
      order: this replicate's example order of the epoch (n_train,).
      i: the step within the epoch.
      batch_size: B.

    A last batch past the end of ``order`` is filled up with the epoch's first examples at zero
    weight, so that batch statistics (BatchNorm) still see real, distinct images.
    """
    n = order.shape[0]
    position = i * batch_size + jnp.arange(batch_size)
    index = order[position % n]
    return Batch(jnp.take(x, index, axis=0), jnp.take(y, index),
                 (position < n).astype(jnp.float32))


def for_each_replicate(fn: Callable[..., PyTree], batching: str) -> Callable[..., PyTree]:
    """``fn`` of one replicate's arguments as a function of a batch of replicates.

    Every argument and result of the new function has a leading replicate axis on each leaf.
    ``batching`` (one of :data:`REPLICATE_BATCHING`) says how the replicates are computed:
    ``jax.vmap``, one call of ``fn`` per replicate in the program (``"unroll"``), or
    ``jax.lax.map``; the results agree to float rounding.
    """
    if batching == "vmap":
        return jax.vmap(fn)
    if batching == "map":
        return lambda *args: jax.lax.map(lambda one: fn(*one), args)

    def unrolled(*args):
        count = jax.tree_util.tree_leaves(args)[0].shape[0]
        results = [fn(*jax.tree_util.tree_map(lambda a, r=r: a[r], args)) for r in range(count)]
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *results)

    return unrolled


def train_loop(step: Callable[[TrainState, jax.Array], tuple[TrainState, dict[str, jax.Array]]],
               state: TrainState, lo: jax.Array,
               hi: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """``state`` after ``step(state, i)`` for ``i`` in ``lo..hi-1``, in one ``fori_loop``.

    ``state`` is one replicate's or a batch of them, and the stats have the shape of its
    ``step``: ``{"loss": the mean training loss, "first_nonfinite_step": the global step whose
    loss was first NaN or infinite, or -1}``.
    """

    def body(i, carry):
        state, total, bad = carry
        new, metrics = step(state, i)
        loss = metrics["loss"]
        return new, total + loss, jnp.where((bad < 0) & ~jnp.isfinite(loss), state.step, bad)

    shape = jnp.shape(state.step)
    init = (state, jnp.zeros(shape, jnp.float32), jnp.full(shape, -1, jnp.int32))
    state, total, bad = jax.lax.fori_loop(lo, hi, body, init)
    return state, {"loss": total / jnp.maximum(hi - lo, 1), "first_nonfinite_step": bad}


def choose_replicate_batching(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                              backend: str | None = None, replicates: int = 1) -> str:
    """The fastest of :data:`REPLICATE_BATCHING` for ``model`` on ``backend`` (default: JAX's).

    Accelerators get ``"vmap"``. On a CPU, batched matmuls run no faster per replicate than
    single ones while the working set grows with the replicates, so they run one at a time:
    interleaved step by step (``"unroll"``) while a step's activations fit in about one core's
    cache and there are at most :data:`UNROLL_MAX_REPLICATES` of them, else one after another
    (``"map"``). ``python -m experiments.benchmark --only=replicates`` measures all three.

    Args:
      model: the Flax model.
      input_shape: the shape of one example.
      batch_size: examples per step.
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
      replicates: how many replicates the program computes.
    """
    if (backend or jax.default_backend()) != "cpu":
        return "vmap"
    if replicates > UNROLL_MAX_REPLICATES:
        return "map"
    sample = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, capture_intermediates=True), sample)
    activations = sum(a.size * a.dtype.itemsize
                      for a in jax.tree_util.tree_leaves(variables.get("intermediates", {})))
    return "unroll" if activations <= UNROLL_MAX_ACTIVATION_BYTES else "map"


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The model and hyperparameters behind the compiled training and evaluation functions.

    Hashable, so its methods' jitted closures are built once per trainer.
    """

    model: nn.Module
    hyper: Hyper
    n_train: int
    eval_batch_size: int = 10_000
    # Device layout (see imp_jax.core.parallel): how each replicate's minibatch is split over
    # devices, and the sharding every state leaf (and per-replicate output) keeps across calls.
    batch_sharding: jax.sharding.Sharding | None = None
    state_sharding: jax.sharding.Sharding | None = None
    # Inputs held as uint8 on device are normalised on the fly with (mean, std) per channel,
    # after a random flip and padded crop when ``augment`` is set.
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    augment: bool = False
    # How a compiled call computes its replicates (see REPLICATE_BATCHING).
    replicate_batching: str = "vmap"

    def __post_init__(self):
        if self.replicate_batching not in REPLICATE_BATCHING:
            raise ValueError(f"replicate_batching must be one of {REPLICATE_BATCHING}, "
                             f"got {self.replicate_batching!r}")

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_train, self.hyper.batch_size)

    @property
    def optimizer(self) -> optax.GradientTransformationExtraArgs:
        """The update direction (``hyper.optimizer``), masked; the learning rate is applied by
        the step itself so that it follows the global step even when the optimizer state is
        rebuilt at a rewind."""
        return masks_lib.masked_optimizer(optimizers.OPTIMIZERS[self.hyper.optimizer](self.hyper))

    def learning_rate(self, step: jax.Array) -> jax.Array:
        """The learning rate at global ``step`` (``hyper.schedule``)."""
        return optimizers.SCHEDULES[self.hyper.schedule](self.hyper)(step)

    def init(self, keys: jax.Array, sample_x: jax.Array, masks: PyTree | None = None) -> TrainState:
        """Initial states of ``len(keys)`` replicates (model init and data order from each key).

        Args:
          keys: one ``jax.random`` key per replicate.
          sample_x: one input batch, for the shapes.
          masks: a mask to start from (unbatched); all-true when None.
        """

        def one(key):
            init_key, data_key = jax.random.split(key)
            variables = self.model.init(init_key, sample_x[:1])
            params = variables["params"]
            model_state = {k: v for k, v in variables.items() if k != "params"}
            mask = masks_lib.ones_like(params) if masks is None else masks
            return self.rewind(TrainState(
                step=jnp.int32(0), params=params, opt_state=None, masks=mask,
                model_state=model_state, rng=jax.random.key_data(data_key)), mask)

        return jax.jit(jax.vmap(one))(keys)

    def rewind(self, point: TrainState, masks: PyTree) -> TrainState:
        """The rewind ``point`` with ``masks`` applied and a fresh optimizer state.

        Works on one replicate or, under ``jax.vmap``, on a batch of them.
        """
        params = masks_lib.apply_mask(point.params, masks)
        return point.replace(params=params, masks=masks, opt_state=self.optimizer.init(params))

    def epoch_order(self, rng: np.ndarray, epoch: int) -> np.ndarray:
        """The shuffled example order of ``epoch`` for each replicate: (replicates, n_train).

        Drawn on the host from the replicates' data-order keys (``TrainState.rng``) and the
        epoch alone, so a resumed run sees the same order; numpy shuffles 60 000 indices in
        under a millisecond, where an XLA sort on a CPU takes tens.
        """
        rng = np.asarray(rng).reshape(len(rng), -1)
        return np.stack([np.random.default_rng([*map(int, key), epoch]).permutation(self.n_train)
                         for key in rng]).astype(np.int32)

    @property
    def run_steps(self):
        """Jitted ``(states, x, labels, order, lo, hi) -> (states, stats)`` over replicates.

        Steps ``lo..hi-1`` (scalars) of the epoch whose example order is ``order`` (see
        :meth:`epoch_order`), of every replicate: :func:`train_step` on each :func:`minibatch`
        of the shared ``x``, in a :func:`train_loop`, :func:`for_each_replicate` as
        :attr:`replicate_batching` says. ``labels`` and ``order`` have shape (replicates,
        n_train); the states are donated; the stats are :func:`train_loop`'s, per replicate.
        """
        return _jit_run_steps(self)

    @property
    def predict(self):
        """Jitted ``(params, masks, model_state, x) -> logits`` of shape (replicates, n,
        classes): :func:`eval_step` over ``x`` in batches of :attr:`eval_batch_size`, the
        replicates computed as :attr:`replicate_batching` says."""
        return _jit_predict(self)


def _native_on_cpu(fn: Callable[..., PyTree]) -> Callable[..., PyTree]:
    """``fn`` with its convolutions in the form XLA:CPU runs fast inside loops and under vmap
    (see :mod:`imp_jax.core.convolutions`); other backends pick their own."""
    return convolutions.native_convolutions(fn) if jax.default_backend() == "cpu" else fn


@functools.cache
def _jit_run_steps(trainer: Trainer):
    b = trainer.hyper.batch_size

    def run(states, x, labels, order, lo, hi):
        @_native_on_cpu
        def step(state, y, order, i):  # one replicate
            batch = minibatch(x, y, order, i, b)
            if trainer.batch_sharding is not None:
                batch = batch._replace(
                    x=jax.lax.with_sharding_constraint(batch.x, trainer.batch_sharding))
            return train_step(state, batch, trainer)

        if trainer.replicate_batching == "map":  # each replicate through all its steps in turn
            def replicate(state, y, order):
                return train_loop(lambda s, i: step(s, y, order, i), state, lo, hi)

            return for_each_replicate(replicate, "map")(states, labels, order)

        def all_replicates(states, i):  # step i of every replicate
            each = for_each_replicate(lambda s, y, o: step(s, y, o, i),
                                      trainer.replicate_batching)
            return each(states, labels, order)

        return train_loop(all_replicates, states, lo, hi)

    return jax.jit(run, donate_argnums=0, out_shardings=trainer.state_sharding)


@functools.cache
def _jit_predict(trainer: Trainer):
    def one(params, masks, model_state, x):  # one replicate, all of x
        n = x.shape[0]
        batch = min(trainer.eval_batch_size, n)
        full = n - n % batch

        @_native_on_cpu
        def apply(xb):
            return eval_step(params, masks, model_state, xb, trainer)

        logits = jax.lax.map(apply, x[:full].reshape(-1, batch, *x.shape[1:]))
        logits = logits.reshape(full, -1)
        return jnp.concatenate([logits, apply(x[full:])]) if full < n else logits

    def run(params, masks, model_state, x):
        each = for_each_replicate(lambda p, m, s: one(p, m, s, x), trainer.replicate_batching)
        return each(params, masks, model_state)

    return jax.jit(run)
