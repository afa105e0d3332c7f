"""Benchmarks behind the figures quoted in the README and the issues (``python -m
experiments.benchmark`` runs them).

Each section prints one line per figure, as ``name: value`` pairs; timings are the median of
several runs after a warm-up (compilation excluded), and ratios are taken within one run so that a
noisy machine affects both sides alike. Every section is a function of :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imp_jax import export, masks
from imp_jax.core import models, parallel, train

# The epochs of a level of the study's MNIST config (configs/mnist_noise.py), projected to.
STUDY_EPOCHS = 120


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the sections are run with.

    Attributes:
      repeats: timed runs per figure (the median is reported).
      mnist_manual_dir: the folder of the MNIST archives (section ``level``).
      data_dir: tensorflow-datasets data_dir for MNIST ("": a temporary one, prepared afresh).
      sparse_run: a finished FCN run whose model section ``sparse`` exports ("": a short IMP
        run of the study's MNIST network, made afresh).
      sparse_level: the level of ``sparse_run`` to export (``best`` or a number).
    """

    repeats: int = 5
    mnist_manual_dir: str = "../shared/data/mnist"
    data_dir: str = ""
    sparse_run: str = ""
    sparse_level: str = "best"


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` (blocking on its result) after one warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timeit_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each of ``fns``, the functions taking turns in every round so that a
    machine whose speed drifts affects them alike; each timed call follows an untimed one of the
    same function, so that none is timed with caches just filled by another."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            jax.block_until_ready(fn())
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_prune(settings: Settings) -> None:
    """Jitted global magnitude pruning of a 10M-weight tree, against a full sort of its values."""
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 64, 64)] * 6 + [(3, 3, 128, 128)] * 6 + [(3, 3, 256, 256)] * 15 + [(256, 10)]
    params = {f"layer{i}": {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
                            "bias": jnp.zeros(s[-1])} for i, s in enumerate(shapes)}
    mask = masks.ones_like(params)
    n = masks.count(mask)["total"]
    prune = jax.jit(lambda p, m: masks.prune_global(p, m, 0.2))
    t_prune = timeit(lambda: prune(params, mask), settings.repeats)
    flat = jnp.concatenate([jnp.abs(x["kernel"]).ravel() for x in params.values()])
    sort = jax.jit(jnp.sort)
    t_sort = timeit(lambda: sort(flat), max(1, settings.repeats // 2))
    print(f"prune_global: weights={n} seconds={t_prune:.3f} full_sort_seconds={t_sort:.3f} "
          f"speedup_vs_sort={t_sort / t_prune:.1f}x")


def _fcn_trainer(hidden: int, classes: int, n: int, batch: int, replicate_batching: str = "vmap",
                 **model_kw) -> train.Trainer:
    model = models.make_model("fcn", classes, hidden=(hidden,), **model_kw)
    return train.Trainer(model, train.Hyper(batch_size=batch, lr=0.1), n,
                         replicate_batching=replicate_batching)


def _epochs(trainer: train.Trainer, replicates: int, x: jax.Array, y: np.ndarray,
            epochs: int) -> Callable[[], object]:
    """A closure running ``epochs`` epochs of ``replicates`` replicates (orders precomputed,
    as the driver overlaps their generation with the previous epoch's training)."""
    state = trainer.init(jax.random.split(jax.random.key(0), replicates), x[:1])
    labels = jnp.broadcast_to(jnp.asarray(y), (replicates, len(y)))
    orders = [jnp.asarray(trainer.epoch_order(np.asarray(state.rng), e)) for e in range(epochs)]
    holder = [state]

    def run():
        stats = None
        for order in orders:
            holder[0], stats = trainer.run_steps(holder[0], x, labels, order, 0,
                                                 trainer.steps_per_epoch)
        return stats

    return run


def bench_epoch(settings: Settings) -> None:
    """FCN 784-300-10, batch 128, SGD, 60 000 examples: epoch time and FLOP/s utilisation."""
    rng = np.random.default_rng(0)
    n, batch = 60_000, 128
    x = jnp.asarray(rng.normal(size=(n, 784)), jnp.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    trainer = _fcn_trainer(300, 10, n, batch)
    t_epoch = timeit(_epochs(trainer, 1, x, y, 1), settings.repeats)
    state = trainer.init(jax.random.split(jax.random.key(0), 1), x[:1])
    labels = jnp.asarray(y)[None]
    order = jnp.asarray(trainer.epoch_order(np.asarray(state.rng), 0))
    compiled = trainer.run_steps.lower(state, x, labels, order, 0, 1).compile()
    # XLA's cost analysis counts a loop body once: the epoch runs it steps_per_epoch times.
    step_flops = compiled.cost_analysis()["flops"]
    epoch_flops = step_flops * trainer.steps_per_epoch
    achieved = epoch_flops / t_epoch

    # The reference: the training step's own matmuls (forward, and the weight gradients),
    # with the same shapes, back to back in one compiled loop.
    w1, w2 = jnp.ones((784, 300)), jnp.ones((300, 10))

    def gemms(_, carry):
        xb, w1, w2 = carry
        h = xb @ w1
        out = h @ w2
        dh = out @ w2.T
        return xb, w1 + 1e-9 * (xb.T @ dh), w2 + 1e-9 * (h.T @ out)

    xb = jnp.ones((batch, 784))
    loop = jax.jit(lambda c: jax.lax.fori_loop(0, trainer.steps_per_epoch, gemms, c))
    gemm_flops = loop.lower((xb, w1, w2)).compile().cost_analysis()["flops"]
    t_gemm = timeit(lambda: loop((xb, w1, w2)), settings.repeats)
    peak = gemm_flops * trainer.steps_per_epoch / t_gemm
    big = jnp.ones((2048, 2048))
    square = jax.jit(lambda a: a @ a)
    t_big = timeit(lambda: square(big), settings.repeats)
    print(f"epoch fcn784-300-10 batch={batch} n={n}: seconds={t_epoch:.3f} "
          f"xla_flops={epoch_flops:.3e} achieved_gflops={achieved / 1e9:.1f} "
          f"same_shape_matmul_gflops={peak / 1e9:.1f} utilisation={achieved / peak:.0%} "
          f"(2048^3 matmul: {2 * 2048**3 / t_big / 1e9:.1f} GFLOP/s)")


def bench_replicates(settings: Settings) -> None:
    """time(5 replicates in one program) / (5 x time(1)) for the mixture network (D=100, batch
    1024), for each way of computing the replicates; "auto" is the one the driver picks here."""
    rng = np.random.default_rng(0)
    n, dim, replicates, epochs = 10_000, 100, 5, 10
    x = jnp.asarray(rng.normal(size=(n, dim)), jnp.float32)
    y = rng.integers(0, 2, size=n).astype(np.int32)
    kw = dict(use_bias=False, init="kaiming_uniform")
    for width in (10, 100, 1000):
        auto = train.choose_replicate_batching(
            models.make_model("fcn", 2, hidden=(width,), **kw), (dim,), 1024)
        fns = {"one": _epochs(_fcn_trainer(width, 2, n, 1024, auto, **kw), 1, x, y, epochs)}
        for batching in train.REPLICATE_BATCHING:
            trainer = _fcn_trainer(width, 2, n, 1024, batching, **kw)
            fns[batching] = _epochs(trainer, replicates, x, y, epochs)
        t = timeit_interleaved(fns, max(settings.repeats, 10))
        ratios = " ".join(f"{b}={t[b] / (replicates * t['one']):.2f}"
                          for b in train.REPLICATE_BATCHING)
        print(f"replicates P={width}: one={t['one'] / epochs * 1e3:.2f}ms/epoch ratio "
              f"auto({auto})={t[auto] / (replicates * t['one']):.2f} [{ratios}]", flush=True)


def bench_cifar(settings: Settings) -> None:
    """CIFAR ResNet (W=16, 3 blocks a stage) steps on synthetic uint8 CIFAR-shaped data."""
    n, batch, steps = 256, 128, 2
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8))
    y = rng.integers(0, 10, size=n).astype(np.int32)
    model = models.make_model("resnet", 10, width=16, blocks_per_stage=3)
    trainer = train.Trainer(model, train.Hyper(batch_size=batch, lr=0.1, momentum=0.9,
                                               weight_decay=1e-4), n,
                            normalisation=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                            augment=True)
    seconds = timeit(_epochs(trainer, 1, x, y, 1), max(1, settings.repeats // 5)) / steps
    print(f"cifar resnet W=16 batch={batch}: step={seconds * 1e3:.0f}ms "
          f"epoch_50k={seconds * 50_000 / batch:.0f}s")


def _cnn_figures(model: nn.Module, shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Seconds per call of the ``cnn`` section for one model (see :func:`bench_cnn`): a
    training step (plain, and in each replicate batching with 1 and 3 replicates), the plain
    apply and the driver's prediction with 1 and 3 replicates."""
    batch, steps, n_test = 128, 2, 10_000
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(steps * batch, *shape)), jnp.float32)
    y = rng.integers(0, 10, size=steps * batch).astype(np.int32)
    x_test = jnp.asarray(rng.normal(size=(n_test, *shape)), jnp.float32)
    hyper = train.Hyper(batch_size=batch, lr=0.1, momentum=0.9)
    trainers = {b: train.Trainer(model, hyper, steps * batch, replicate_batching=b)
                for b in train.REPLICATE_BATCHING}
    auto = trainers[train.choose_replicate_batching(model, shape, batch)]
    init = jax.tree_util.tree_map(lambda a: a[0],
                                  auto.init(jax.random.split(jax.random.key(0), 1), x))
    step = jax.jit(functools.partial(train.train_step, trainer=auto), donate_argnums=0)
    batches = [train.Batch(x[i * batch:(i + 1) * batch], jnp.asarray(y[i * batch:(i + 1) * batch]),
                           jnp.ones(batch, jnp.float32)) for i in range(steps)]
    holder = [init]

    def plain_steps():  # the same steps as a run_steps call, one jitted step at a time
        for b in batches:
            holder[0], metrics = step(holder[0], b)
        return metrics

    fns = {"step": plain_steps}
    for b, tr in trainers.items():
        fns[b] = _epochs(tr, 1, x, y, 1)
        fns[f"{b}3"] = _epochs(tr, 3, x, y, 1)
    for r in (1, 3):
        states = auto.init(jax.random.split(jax.random.key(0), r), x)
        fns[f"predict{r}"] = functools.partial(auto.predict, states.params, states.masks,
                                               states.model_state, x_test)
    apply = jax.jit(functools.partial(model.apply, train=False))
    variables = jax.tree_util.tree_map(lambda a: a[0], {"params": states.params,
                                                        **states.model_state})
    fns["apply"] = functools.partial(apply, variables, x_test)
    t = timeit_interleaved(fns, repeats)
    per_step = ("step", *train.REPLICATE_BATCHING, *(f"{b}3" for b in train.REPLICATE_BATCHING))
    return {**t, **{k: t[k] / steps for k in per_step}, "auto": auto.replicate_batching}


def bench_cnn(settings: Settings) -> None:
    """Each CNN's training loop and prediction against its plain jitted step and apply.

    ``loop_vs_step``: the per-step time of ``Trainer.run_steps`` (one replicate) over that of
    ``train.train_step`` jitted alone, for each replicate batching; ``replicates3``: 3
    replicates in one program over 3 separate runs; ``eval_vs_apply``: ``Trainer.predict`` (the
    batching the driver picks) on 10 000 test images over the model's ``apply`` jitted alone on
    all of them (``eval3``: 3 replicates, over 3 applies). Synthetic float images, batch 128,
    SGD with momentum, no augmentation.
    """
    cnns = (("resnet20 W=16", models.make_model("resnet", 10, width=16, blocks_per_stage=3),
             (32, 32, 3)),
            ("mnist resnet6 W=8", models.make_model("resnet", 10, width=8, blocks_per_stage=1),
             (28, 28, 1)))
    for name, model, shape in cnns:
        t = _cnn_figures(model, shape, max(1, settings.repeats // 2))
        loops = " ".join(f"{b}={t[b] / t['step']:.2f}" for b in train.REPLICATE_BATCHING)
        threes = " ".join(f"{b}={t[f'{b}3'] / (3 * t[b]):.2f}" for b in train.REPLICATE_BATCHING)
        print(f"cnn {name} batch=128: step={t['step'] * 1e3:.0f}ms loop_vs_step=[{loops}] "
              f"replicates3=[{threes}] apply_10k={t['apply']:.2f}s "
              f"eval_vs_apply({t['auto']})={t['predict1'] / t['apply']:.2f} "
              f"eval3_vs_apply={t['predict3'] / (3 * t['apply']):.2f}", flush=True)


def bench_sharded_epoch(settings: Settings) -> None:
    """The FCN epoch of ``bench_epoch`` with each batch split over all devices."""
    rng = np.random.default_rng(0)
    n, batch = 60_000, 128
    layout = parallel.Layout.create("batch")
    model = models.make_model("fcn", 10, hidden=(300,))
    trainer = train.Trainer(model, train.Hyper(batch_size=batch, lr=0.1), n,
                            batch_sharding=layout.batch, state_sharding=layout.per_replicate)
    x = layout.put(rng.normal(size=(n, 784)).astype(np.float32), layout.replicated)
    labels = layout.put(rng.integers(0, 10, size=(1, n)).astype(np.int32), layout.per_replicate)
    state = layout.put_state(trainer.init(jax.random.split(jax.random.key(0), 1), x[:1]))
    order = layout.put(trainer.epoch_order(layout.fetch(state.rng), 0), layout.per_replicate)
    holder = [state]

    def run():
        holder[0], stats = trainer.run_steps(holder[0], x, labels, order, 0,
                                             trainer.steps_per_epoch)
        return stats

    print(f"sharded_epoch devices={jax.device_count()} seconds={timeit(run, settings.repeats):.3f}")


def bench_scaling(settings: Settings) -> None:
    """Epoch time of the batch-sharded FCN on 1, 2, 4 and 8 simulated devices."""
    times = {}
    for devices in (1, 2, 4, 8):
        env = {**os.environ,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        out = subprocess.run(
            [sys.executable, "-m", "experiments.benchmark", "--only=sharded_epoch",
             f"--repeats={settings.repeats}"], env=env, check=True, capture_output=True, text=True)
        times[devices] = float(out.stdout.split("seconds=")[-1].split()[0])
    print("scaling fcn784-300-10 batch=128 (batch split over devices): " + " ".join(
        f"{d}dev={t:.3f}s(x{t / times[1]:.2f})" for d, t in times.items()))


def bench_level(settings: Settings) -> None:
    """The full mnist_noise config (3 replicates), shortened to a few epochs and levels:
    per-level overhead (evaluation + pruning + checkpoints) against a 120-epoch level, and the
    peak resident memory of the whole process (which does not grow with epochs or levels)."""
    epochs = 3
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "experiments.run", "--config=configs/mnist_noise.py",
               f"--workdir={tmp}/run", f"--config.train.epochs={epochs}",
               "--config.imp.levels=2", "--config.checkpoint.every_epochs=1",
               f"--config.data.manual_dir={settings.mnist_manual_dir}",
               f"--config.data.data_dir={settings.data_dir or tmp + '/tfds'}"]
        subprocess.run(cmd, check=True, capture_output=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        lines = Path(tmp, "run", "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    full = STUDY_EPOCHS
    last = next(r for r in rows if r["level"] == 2)  # no compilation left in the last level
    per_epoch = last["time_train_s"] / epochs
    per_save = last["time_checkpoint_s"] / epochs  # in-level saves after epochs 1, 2 + the end
    saves = full // 10  # the full config: every 10 epochs (the last one is the level's own)
    overhead = last["time_eval_s"] + last["time_prune_s"] + per_save * saves
    level = per_epoch * full + overhead
    print(f"level mnist_noise (3 replicates): epoch={per_epoch:.2f}s "
          f"eval={last['time_eval_s']:.2f}s prune={last['time_prune_s']:.3f}s "
          f"checkpoint={per_save:.3f}s/save; projected "
          f"{full}-epoch level={level:.0f}s overhead={overhead:.2f}s ({overhead / level:.2%})")
    print(f"memory mnist_noise (3 replicates): peak_rss={peak / 2**30:.2f} GiB")


# Runs experiments.run in this interpreter's child, optionally after importing TensorFlow (as
# runs did when they read datasets through it), and reports the child's own peak memory.
_MEASURED_RUN = """import atexit, resource, runpy, sys
{before}
atexit.register(lambda: print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              file=sys.stderr, flush=True))
sys.argv = ["experiments.run", *sys.argv[1:]]
runpy.run_module("experiments.run", run_name="__main__")
"""


def _start_up(flags: list[str], before: str) -> tuple[float, float, float]:
    """Seconds to the first training step (the run's device line, logged once the data is on
    the device and the model built), seconds in all, and peak RSS in GiB of one MNIST run."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _MEASURED_RUN.format(before=before), *flags],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    first, peak = None, 0.0
    for line in proc.stderr:
        if first is None and "replicate(s) on" in line:
            first = time.perf_counter() - start
        if line.startswith("peak_rss_kib"):
            peak = int(line.split()[1]) / 2**20
    if proc.wait() != 0 or first is None:
        raise RuntimeError(f"the measured MNIST run failed (exit {proc.returncode})")
    return first, time.perf_counter() - start, peak


def bench_startup(settings: Settings) -> None:
    """Start-up of an MNIST run on a prepared dataset (one epoch of the smoke config): as it
    runs (reading the array cache, TensorFlow never imported), and with TensorFlow imported
    first, as a run that read its data through TensorFlow paid."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = settings.data_dir or tmp + "/tfds"
        flags = ["--config=configs/mnist_noise.py:smoke", "--config.train.epochs=1",
                 "--config.imp.levels=0", f"--config.data.manual_dir={settings.mnist_manual_dir}",
                 f"--config.data.data_dir={data_dir}"]
        _start_up([*flags, f"--workdir={tmp}/prepare"], "")  # prepares MNIST once, if needed
        for name, before in (("without_tensorflow", ""), ("with_tensorflow", "import tensorflow")):
            times = [_start_up([*flags, f"--workdir={tmp}/{name}{i}"], before)
                     for i in range(settings.repeats)]
            first, total, peak = (float(np.median(t)) for t in zip(*times, strict=True))
            print(f"startup mnist {name}: first_step={first:.2f}s run={total:.2f}s "
                  f"peak_rss={peak:.2f}GiB")


# The level of configs/mnist_noise.py that keeps 5 358 weights, the study's best pruned P=300
# network (Table S2): the level section ``sparse`` exports from its short run.
STUDY_BEST_LEVEL = 17


def _short_mnist_run(settings: Settings, tmp: str) -> Path:
    """A one-replicate IMP run of configs/mnist_noise.py, 2 epochs a level, to
    :data:`STUDY_BEST_LEVEL`."""
    cmd = [sys.executable, "-m", "experiments.run", "--config=configs/mnist_noise.py",
           f"--workdir={tmp}/run", "--config.replicates=1", "--config.train.epochs=2",
           f"--config.imp.levels={STUDY_BEST_LEVEL}", "--config.checkpoint.every_epochs=2",
           f"--config.data.manual_dir={settings.mnist_manual_dir}",
           f"--config.data.data_dir={settings.data_dir or tmp + '/tfds'}"]
    subprocess.run(cmd, check=True, capture_output=True)
    return Path(tmp, "run")


def bench_sparse(settings: Settings) -> None:
    """Inference of a pruned FCN as the masked dense model, its compact export and its BCOO
    export, at batch 1 and 1024: ms per call, the compact shape, and the largest logit
    difference from the masked model."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(settings.sparse_run) if settings.sparse_run else _short_mnist_run(settings,
                                                                                     tmp)
        level = (export.resolve_level(run, settings.sparse_level) if settings.sparse_run
                 else STUDY_BEST_LEVEL)
        [source] = export.read_level(run, level, 0)
    if export.architecture(source.params) != "fcn":
        raise ValueError("section sparse: --sparse_run must be an FCN run")
    nets = {fmt: export.EXPORTERS[fmt](source.params, source.masks) for fmt in export.FORMATS}
    hidden = [source.params[n]["kernel"].shape[1] for n in nets["bcoo"].meta["layers"][:-1]]
    model = models.make_model("fcn", source.params["output"]["kernel"].shape[1],
                              hidden=hidden, use_bias="bias" in source.params["output"])
    masked = jax.jit(lambda p, m, x: model.apply({"params": masks.apply_mask(p, m)}, x))
    weights = nets["compact"].meta["weights"]
    print(f"sparse {'given run' if settings.sparse_run else 'short mnist_noise run'} level "
          f"{level}: weights={weights['kept']}/{weights['total']} "
          f"shape={nets['bcoo'].shape} compact_shape={nets['compact'].shape}")
    fan_in = source.params[nets["bcoo"].meta["layers"][0]]["kernel"].shape[0]
    diff, times = 0.0, {}
    for batch in (1, 1024):
        x = jax.random.normal(jax.random.key(batch), (batch, fan_in))
        fns = {"masked": functools.partial(masked, source.params, source.masks, x),
               **{fmt: functools.partial(net.predict, x) for fmt, net in nets.items()}}
        times = timeit_interleaved(fns, max(settings.repeats, 20))
        reference = fns["masked"]()
        diff = max(diff, *(float(jnp.max(jnp.abs(nets[f].predict(x) - reference)))
                           for f in nets))
        print(f"sparse batch={batch}: " + " ".join(f"{k}={t * 1e3:.3f}ms"
                                                   for k, t in times.items()))
    print(f"sparse: compact_speedup={times['masked'] / times['compact']:.2f} "
          f"bcoo_speedup={times['masked'] / times['bcoo']:.2f} (batch 1024, over masked dense) "
          f"max_abs_logit_diff={diff:.2e} equal={'yes' if diff <= 1e-5 else 'no'}")


SECTIONS: dict[str, Callable[[Settings], None]] = {
    "prune": bench_prune, "epoch": bench_epoch, "replicates": bench_replicates,
    "cifar": bench_cifar, "cnn": bench_cnn, "scaling": bench_scaling, "level": bench_level,
    "sharded_epoch": bench_sharded_epoch, "startup": bench_startup,
    "sparse": bench_sparse}


