"""imp_jax: iterative magnitude pruning under label noise, in JAX/Flax."""

__version__ = "0.1.0"
