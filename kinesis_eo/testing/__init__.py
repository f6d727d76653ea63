"""Public fakes, back-ends and fault injection for tests."""
