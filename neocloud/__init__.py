"""neocloud: sell an AI lab's spare GPU capacity (node agents, a Ray scheduler, metering, the CLI).
Importing the package imports nothing; `__version__` is the one place the version is written."""

__version__ = "0.1.0"
