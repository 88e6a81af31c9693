"""jaxqc: machine learning for quantum chemistry in JAX."""
__version__ = "0.1.0"
