"""The tests' name for the package's fault proxy (neocloud/bench/faultproxy.py), whose cut()
breaks a gRPC stream the way a network does (both directions, mid-flight)."""

from neocloud.bench.faultproxy import FaultProxy as CuttableProxy

__all__ = ["CuttableProxy"]
