"""tq-console: the operations console and command line of tq. Version only; imports nothing."""

__version__ = "0.1.0"
