"""Train state, the jitted training loop and evaluation.

Every function here works on a *batch of replicates*: each leaf of a :class:`TrainState` has a
leading replicate axis, the inputs ``x`` are shared by all replicates (held once on device), and
the labels have one row per replicate. Training runs as jitted calls of :func:`Trainer.run_steps`,
each a loop over minibatches of on-device data; masks are *inputs* of the compiled function, so
every pruning level reuses one compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from imp_jax import augment as augment_lib
from imp_jax import masks as masks_lib

PyTree = Any

# Ways to compute a batch of replicates in one compiled call (the same results, to float
# rounding): "vmap", one batched step for all of them (accelerators: bigger kernels, fewer
# launches); "unroll", a step of each replicate in turn in every iteration of the loop (CPU, small
# models: the per-step overhead is shared); "map", the replicates one after another, each through
# all its steps (CPU, larger models: one replicate's working set at a time stays in cache).
REPLICATE_BATCHING = ("vmap", "unroll", "map")
# One core's L2 cache, roughly: the activations of a step up to which "unroll" beats "map".
UNROLL_MAX_ACTIVATION_BYTES = 1 << 20


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
    """

    batch_size: int
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_boundaries: tuple[int, ...] = ()
    lr_decay: float = 0.1


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps in one pass over ``n_train`` examples, the last batch possibly partial."""
    return math.ceil(n_train / batch_size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def choose_replicate_batching(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                              backend: str | None = None) -> str:
    """The fastest of :data:`REPLICATE_BATCHING` for ``model`` on ``backend`` (default: JAX's).

    Accelerators get ``"vmap"``. On a CPU, batched matmuls run no faster per replicate than
    single ones while the working set grows with the replicates, so they run one at a time:
    interleaved step by step (``"unroll"``) while a step's activations fit in about one core's
    cache, else one after another (``"map"``). ``python -m experiments.benchmark
    --only=replicates`` measures all three.

    Args:
      model: the Flax model.
      input_shape: the shape of one example.
      batch_size: examples per step.
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
    """
    if (backend or jax.default_backend()) != "cpu":
        return "vmap"
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
    # Device layout (see imp_jax.parallel): how each replicate's minibatch is split over devices,
    # and the sharding every state leaf (and per-replicate output) keeps across calls.
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
        """Momentum and weight decay, masked; the learning rate is applied by the step itself so
        that it follows the global step even when the optimizer state is rebuilt at a rewind."""
        hp = self.hyper
        inner = optax.chain(optax.add_decayed_weights(hp.weight_decay),
                            optax.trace(decay=hp.momentum, nesterov=hp.nesterov))
        return masks_lib.masked_optimizer(inner)

    def learning_rate(self, step: jax.Array) -> jax.Array:
        """The learning rate at global ``step`` (step-wise decay)."""
        schedule = optax.piecewise_constant_schedule(
            self.hyper.lr, {int(b): self.hyper.lr_decay for b in self.hyper.lr_boundaries})
        return schedule(step)

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

    def _step(self, state: TrainState, xb: jax.Array, yb: jax.Array,
              weights: jax.Array) -> tuple[TrainState, jax.Array]:
        if self.normalisation is not None and self.augment:
            # Keyed by the replicate's data-order key and the step: a resumed run replays it.
            key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            xb = augment_lib.augment_and_normalise(key, xb, *self.normalisation)
        elif self.normalisation is not None:
            xb = augment_lib.normalise(xb, *self.normalisation)

        def loss_fn(params):
            variables = {"params": masks_lib.apply_mask(params, state.masks), **state.model_state}
            # Batch statistics (if any) are updated in train mode, from the real examples of
            # the batch only; they are never pruned.
            logits, model_state = self.model.apply(variables, xb, train=True, valid=weights > 0,
                                                   mutable=list(state.model_state))
            loss = jnp.sum(cross_entropy(logits, yb) * weights) / jnp.sum(weights)
            return loss, model_state

        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params,
                                                   masks=state.masks)
        lr = self.learning_rate(state.step)
        params = jax.tree_util.tree_map(lambda p, u: p - (lr * u).astype(p.dtype),
                                        state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                             model_state={**state.model_state, **model_state}), loss

    def epoch_order(self, rng: np.ndarray, epoch: int) -> np.ndarray:
        """The shuffled example order of ``epoch`` for each replicate: (replicates, n_train).

        Drawn on the host from the replicates' data-order keys (``TrainState.rng``) and the
        epoch alone, so a resumed run sees the same order; numpy shuffles 60 000 indices in
        under a millisecond, where an XLA sort on a CPU takes tens.
        """
        rng = np.asarray(rng).reshape(len(rng), -1)
        return np.stack([np.random.default_rng([*map(int, key), epoch]).permutation(self.n_train)
                         for key in rng]).astype(np.int32)

    def _replicate_step(self, state: TrainState, x: jax.Array, y: jax.Array, idx: jax.Array,
                        weights: jax.Array) -> tuple[TrainState, jax.Array]:
        """One step of one replicate on the examples ``idx`` of the shared ``x``."""
        xb = jnp.take(x, idx, axis=0)
        if self.batch_sharding is not None:
            xb = jax.lax.with_sharding_constraint(xb, self.batch_sharding)
        return self._step(state, xb, jnp.take(y, idx), weights)

    def _run_steps(self, groups: tuple[TrainState, ...], x: jax.Array,
                   ys: tuple[jax.Array, ...], orders: tuple[jax.Array, ...], lo: jax.Array,
                   hi: jax.Array) -> tuple[tuple[TrainState, ...], dict[str, jax.Array]]:
        """Steps ``lo..hi-1`` of an epoch for groups of replicates.

        Each group is a batch of replicates (leading axis), with its labels and orders of shape
        (replicates, n_train); every iteration of the loop takes one step of every group, the
        replicates of a group batched with ``jax.vmap``. Returns the new groups and, over all
        replicates in turn, ``{"loss": mean training loss, "first_nonfinite_step": the global
        step whose loss was first NaN or infinite, or -1}``.
        """
        b, spe, n = self.hyper.batch_size, self.steps_per_epoch, self.n_train
        # The last batch is filled up with the epoch's first examples at zero loss weight, so
        # that batch statistics (BatchNorm) still see real, distinct images.
        orders = tuple(jnp.concatenate([order, order[:, :spe * b - n]], axis=1)
                       for order in orders)
        valid = (jnp.arange(spe * b) < n).astype(jnp.float32)
        step = jax.vmap(self._replicate_step, in_axes=(0, None, 0, 0, None))

        def body(i, carry):
            weights = jax.lax.dynamic_slice_in_dim(valid, i * b, b)
            out = []
            for state, total, bad, y, order in zip(*carry, ys, orders, strict=True):
                idx = jax.lax.dynamic_slice_in_dim(order, i * b, b, axis=1)
                new, loss = step(state, x, y, idx, weights)
                bad = jnp.where((bad < 0) & ~jnp.isfinite(loss), state.step, bad)
                out.append((new, total + loss, bad))
            return tuple(zip(*out, strict=True))

        init = (groups, tuple(jnp.zeros(len(y), jnp.float32) for y in ys),
                tuple(jnp.full(len(y), -1, jnp.int32) for y in ys))
        groups, totals, bads = jax.lax.fori_loop(lo, hi, body, init)
        return groups, {"loss": jnp.concatenate(totals) / jnp.maximum(hi - lo, 1),
                        "first_nonfinite_step": jnp.concatenate(bads)}

    @property
    def run_steps(self):
        """Jitted ``(states, x, labels, order, lo, hi) -> (states, stats)`` over replicates.

        ``x`` is shared, ``labels`` and ``order`` (see :meth:`epoch_order`) have shape
        (replicates, n_train); ``lo`` and ``hi`` are scalars: steps ``lo..hi-1`` of the epoch.
        The states are donated. How the replicates are computed follows
        :attr:`replicate_batching`; the results agree to float rounding.
        """
        return _jit_run_steps(self)

    def _predict(self, params: PyTree, masks: PyTree, model_state: PyTree,
                 x: jax.Array) -> jax.Array:
        variables = {"params": masks_lib.apply_mask(params, masks), **model_state}
        batch = min(self.eval_batch_size, x.shape[0])
        if self.normalisation is not None:
            x = augment_lib.normalise(x, *self.normalisation)
        return jax.lax.map(lambda xb: self.model.apply(variables, xb[None], train=False)[0], x,
                           batch_size=batch)

    @property
    def predict(self):
        """Jitted ``(states, x) -> logits`` of shape (replicates, n, classes), in batches."""
        return _jit_predict(self)


@functools.cache
def _jit_run_steps(trainer: Trainer):
    def batched(states, x, y, order, lo, hi):
        (states,), stats = trainer._run_steps((states,), x, (y,), (order,), lo, hi)
        return states, stats

    def unrolled(states, x, y, order, lo, hi):
        # Groups of one replicate each, keeping its leading axis: every replicate then runs the
        # very program of a single-replicate run (XLA lays out its dots alike).
        def split(tree):
            return tuple(jax.tree_util.tree_map(lambda a, r=r: a[r:r + 1], tree)
                         for r in range(len(y)))

        groups, stats = trainer._run_steps(split(states), x, split(y), split(order), lo, hi)
        return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *groups), stats

    def mapped(states, x, y, order, lo, hi):
        def one(replicate):
            state, y1, order1 = jax.tree_util.tree_map(lambda a: a[None], replicate)
            return jax.tree_util.tree_map(lambda a: a[0], batched(state, x, y1, order1, lo, hi))

        return jax.lax.map(one, (states, y, order))

    run = {"vmap": batched, "unroll": unrolled, "map": mapped}[trainer.replicate_batching]
    return jax.jit(run, donate_argnums=0, out_shardings=trainer.state_sharding)


@functools.cache
def _jit_predict(trainer: Trainer):
    return jax.jit(jax.vmap(trainer._predict, in_axes=(0, 0, 0, None)))
