"""What the test modules share: the repository's paths, tiny configs and the commands that run
them, and hand-built rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.training.train_state import TrainState

from configs import mixture_linear, mixture_linear_widths
from imp_jax.study import sweep as sweep_cli

ROOT = Path(__file__).resolve().parents[1]
# A tiny mixture run of the smoke configs, as the command line gives it.
TINY_MIXTURE = ["--config.data.mixture_dim=10", "--config.data.mixture_train=500",
                "--config.data.mixture_test=300", "--config.model.hidden=(8,)",
                "--config.train.epochs=3", "--config.train.batch_size=100",
                "--config.eval.fresh_points=2000", "--config.checkpoint.every_epochs=1"]


def run_cli(*args, cwd=ROOT, module="experiments.run"):
    """``python -m module args`` run to its end, its output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


# The original MNIST archives, kept beside the repository (see shared/data/mnist/README.md).
MNIST_ARCHIVES = ROOT.parent / "shared" / "data" / "mnist"


def files_outside_plots(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` but its ``plots/`` folders, as its bytes and mtime: a reader
    that leaves this unchanged wrote nothing but figures."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "plots" not in p.parts}


# Seconds, which differ between two runs of the same config.
TIMING = ("time_train_s", "time_eval_s", "time_prune_s", "time_checkpoint_s")


# Two widths x two replicates of a tiny mixture task, as the command line gives it.
TINY = {"data.mixture_dim": 10, "data.mixture_train": 500, "data.mixture_test": 300,
        "train.epochs": 2, "train.batch_size": 100, "eval.fresh_points": 2000,
        "sweep.width": (4, 8), "imp.levels": 2, "checkpoint.every_epochs": 1}
TINY_FLAGS = ["--config=configs/mixture_linear_widths.py:smoke",
              *(f"--config.{k}={v}".replace(" ", "") for k, v in TINY.items())]


def tiny_sweep():
    """The widths sweep of a tiny mixture task (``TINY``)."""
    c = mixture_linear_widths.get_config("smoke")
    for key, value in TINY.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def python(module, *args, output=subprocess.PIPE):
    """``python -m module args`` started in the repository (a Popen)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env,
                            stdout=output, stderr=output, text=True)


def finished(run_dir):
    """Whether the run in ``run_dir`` says it is finished."""
    summary = run_dir / "summary.json"
    return summary.exists() and json.loads(summary.read_text())["finished"]


def results(run_dir):
    """The run's metrics rows without their timings (which differ between runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def uninterrupted(tmp_path_factory, config):
    """The sweep directory of ``config`` run in one go, to compare others with."""
    sweep_dir = tmp_path_factory.mktemp("reference")
    sweep_cli.run_sweep(config, sweep_dir)
    return sweep_dir


def make_rows(test_errors, *, weights=1000, **per_level):
    """Rows of a run whose level L has ``test_errors[L]`` (a float, or one per replicate).

    Other metrics are given per level as ``name=[...]`` (floats or per-replicate lists);
    unnamed required metrics get fixed values. Each level keeps 80% of the previous weights.
    """
    rows = []
    for level, errors in enumerate(test_errors):
        errors = errors if isinstance(errors, list) else [errors]
        remaining = round(weights * 0.8**level)
        for r, error in enumerate(errors):
            row = {"level": level, "replicate": r, "remaining_weights": remaining,
                   "total_weights": weights, "prunable_remaining": remaining - 10,
                   "prunable_total": weights - 10, "test_error": error, "train_error": 0.1,
                   "test_nll": 0.5, "test_ece_15": 0.05, "test_noisy_ece_15": 0.04,
                   "test_overconfidence": 0.02}
            for name, values in per_level.items():
                value = values[level]
                row[name] = value[r] if isinstance(value, list) else value
            rows.append(row)
    return rows


SDD = [0.20, 0.25, 0.30, 0.22, 0.15, 0.12, 0.18, 0.26, 0.35]


def tiny_config(**overrides):
    """The mixture smoke config shrunk to 3 levels of 4 epochs, with ``section.field`` overrides."""
    c = mixture_linear.get_config("smoke")
    c.data.mixture_dim = 10
    c.data.mixture_train = 500
    c.data.mixture_test = 300
    c.model.hidden = (8,)
    c.train.batch_size = 64
    c.train.epochs = 4
    c.train.momentum = 0.9
    c.imp.levels = 3
    c.checkpoint.every_epochs = 1
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


# -- the mask library's toy training loops (tests/masks) -------------------------------------

# A small two-class problem that the loops train on.
X = jax.random.normal(jax.random.key(1), (32, 6))
Y = (X[:, 0] * X[:, 1] > 0).astype(jnp.int32)


def linen_state(tx: optax.GradientTransformation, hidden: int = 16) -> TrainState:
    """A flax linen TrainState of a 6-``hidden``-2 MLP with the optimizer ``tx``."""
    model = nn.Sequential([nn.Dense(hidden), nn.relu, nn.Dense(2)])
    params = model.init(jax.random.key(0), X)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def linen_step(state: TrainState) -> TrainState:
    """One full-batch step of ``state`` on (X, Y)."""
    def loss(params):
        logits = state.apply_fn({"params": params}, X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    return state.apply_gradients(grads=jax.grad(loss)(state.params))


class NNXModel(nnx.Module):
    """A 6-16-2 MLP in flax NNX."""

    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(6, 16, rngs=rngs)
        self.out = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


@nnx.jit
def nnx_step(model: NNXModel, optimizer: nnx.Optimizer) -> None:
    """One full-batch step of ``model`` on (X, Y), in place."""
    def loss(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(X), Y).mean()

    optimizer.update(model, nnx.grad(loss)(model))

