"""XOR Gaussian mixture (D=100, nu=0.6), 25% label noise; two-layer ReLU FCN without biases.

The setting of the study's uncertainty analysis (the true p(y|x), calibration curves): 10 000
train / 5 000 test points, hidden width P=500, Kaiming-uniform init, SGD lr 0.1, batch 1024, 1000
epochs a level, 5 replicates, pruned until fewer than 20 weights would remain (past the best
pruned model and into its collapse).

Variants (``configs/mixture_xor.py:ARG``):
  smoke: P=50, nu=1.0, 20 epochs, 3 levels, 2 replicates; seconds on a laptop CPU.
"""

from configs import mixture_linear, variants

# The linear task's network and schedule on the XOR task.
STUDY = {**mixture_linear.STUDY, "name": "mixture_xor", "data.name": "mixture_xor",
         "data.mixture_nu": 0.6, "data.label_noise": 0.25}
SMOKE = {**mixture_linear.SMOKE, "data.mixture_nu": 1.0}


def get_config(arg: str | None = None):
    return variants.build(STUDY, arg, smoke={"name": "mixture_xor_smoke", **SMOKE})
