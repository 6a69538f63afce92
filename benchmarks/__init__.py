"""pulse-trio benchmarks: ``python -m benchmarks`` (see benchmarks/README.md).

One module per package (:mod:`benchmarks.rmap`, :mod:`benchmarks.streaming`), each with its
workload constants on top and an ``async run(client, backend)`` that returns
:class:`benchmarks._common.Result` rows. Never part of the test suite: timings are reported,
not asserted.
"""
