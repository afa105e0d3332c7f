"""Linear Gaussian mixture (D=100, nu=0.2), 5% label noise; two-layer ReLU FCN without biases.

The setting of the study's uncertainty analysis (the true p(y|x), calibration curves): 10 000
train / 5 000 test points, hidden width P=500, Kaiming-uniform init, SGD lr 0.1, batch 1024, 1000
epochs a level, 5 replicates, pruned until fewer than 20 weights would remain (past the best
pruned model and into its collapse).

Variants (``configs/mixture_linear.py:ARG``):
  smoke: P=50, nu=0.5, 20 epochs, 3 levels, 2 replicates; seconds on a laptop CPU.
"""

from imp_jax.config import base_config


def get_config(arg: str | None = None):
    c = base_config()
    c.name = "mixture_linear"
    c.replicates = 5
    c.data.name = "mixture_linear"
    c.data.mixture_nu = 0.2
    c.data.label_noise = 0.05
    c.model.hidden = (500,)
    c.model.use_bias = False
    c.model.init = "kaiming_uniform"
    c.train.epochs = 1000
    c.train.batch_size = 1024
    c.train.lr = 0.1
    c.imp.levels = 60
    c.imp.min_weights = 20
    c.checkpoint.every_epochs = 100
    c.log.every_epochs = 100
    if arg == "smoke":
        c.name = "mixture_linear_smoke"
        c.replicates = 2
        c.model.hidden = (50,)
        c.train.epochs = 20
        c.imp.levels = 3
        c.imp.min_weights = 0
        c.data.mixture_nu = 0.5  # an easier task, that a tiny network learns in seconds
        c.checkpoint.every_epochs = 10
        c.log.every_epochs = 0
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of mixture_linear; expected 'smoke'")
    return c
