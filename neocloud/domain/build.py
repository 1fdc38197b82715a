"""What this process is built from, for `neocloud_build_info` on every /metrics."""

from __future__ import annotations

import platform
from importlib import metadata

import neocloud


def build_labels() -> dict[str, str]:
    """Labels of the build_info series: versions an operator compares across a fleet."""
    return {
        "version": neocloud.__version__,
        "python": platform.python_version(),
        "grpcio": _installed("grpcio"),
        "prometheus_client": _installed("prometheus-client"),
    }


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""
