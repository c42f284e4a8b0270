"""wxsub benchmarks: ``python -m bench`` (see bench/RESULTS.md)."""

__all__: list[str] = []
