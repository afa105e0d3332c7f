"""MNIST with 20% label noise: the study's two-layer FCN 784-300-10.

SGD (lr 0.1, batch 128, no momentum), 120 epochs per level, rewinding to the initial weights, the
study used 3 replicates. Pruning follows the reference code (an OpenLTH fork): global magnitude
pruning of 20% of the remaining weights per level counted as OpenLTH counts them
(``prune.count="openlth"``: ``ceil(0.2 R) + 1`` removed, ``R`` every kernel weight still in the
mask), so the levels land on the study's published counts (238 200, 190 559, 152 446, ...), with
the output layer kept dense (the reference code's ``pruning_layers_to_ignore='fc.weight'`` for its
MNIST networks). Dense biases start as PyTorch initialises them (the reference code re-initialises
only the kernels). With the output layer's 3 000 weights always counted, level 19 (3 427 kernel
weights, 427 of them in the hidden layer) is the last the count allows: the run stops there,
past the best pruned model and into the collapse after it.

Variants (``configs/mnist_noise.py:ARG``):
  smoke: 2 000 training examples, 2 epochs, 2 levels, 2 replicates; seconds on a laptop CPU.
"""

from configs import variants

STUDY = {
    "name": "mnist_noise", "replicates": 3,
    "data.name": "mnist", "data.label_noise": 0.2,
    "model.hidden": (300,), "model.init": "kaiming_normal", "model.bias_init": "torch_default",
    "train.epochs": 120, "train.batch_size": 128, "train.lr": 0.1,
    "prune.exclude": ("^output/",), "prune.count": "openlth",
    "imp.levels": 30, "checkpoint.every_epochs": 10,
}
# A seconds-long run of an image config, on a subset.
SMOKE = {"replicates": 2, "data.train_subset": 2000, "train.epochs": 2, "imp.levels": 2,
         "checkpoint.every_epochs": 1}


def get_config(arg: str | None = None):
    return variants.build(STUDY, arg, smoke={"name": "mnist_noise_smoke", **SMOKE})
