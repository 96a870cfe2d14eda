"""The kit's version (one place; ``stylseg.__version__``)."""

__version__ = "0.1.0"
