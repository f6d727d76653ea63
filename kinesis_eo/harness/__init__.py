"""The project's own harness: the chaos run, its workers, the demo's scenario, emulator patches.

Apart from :mod:`kinesis_eo.testing`, which holds what users import for their
own tests (fakes, fault injection, the event source mapping simulator, the
emulator back-ends). The harness builds its workers through
:func:`kinesis_eo.runner.build_worker`, the path ``kinesis-eo run`` takes, so
that what it proves is the product.
"""
