"""genlab's version (its own module, at the bottom: the package's __init__ imports everything else)."""

__version__ = "0.2.0"
