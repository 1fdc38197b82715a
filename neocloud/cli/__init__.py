"""The `neocloud` command line: one module per command group, all built on `neocloud.client`.
May import everything else of neocloud; entered only as the `neocloud` script or `python -m neocloud`."""

from neocloud.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
