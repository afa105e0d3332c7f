"""Tasks and their data: Gaussian mixtures with their exact p(y|x), datasets through
tensorflow-datasets, label noise."""
