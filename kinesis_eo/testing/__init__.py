"""Public fakes, back-ends and fault injection for tests."""

# Its modules are imported by name (kinesis_eo.testing.fakes, ...); nothing is re-exported.
__all__: list[str] = []
