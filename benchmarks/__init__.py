"""pulse-trio benchmarks: ``python -m benchmarks`` (see benchmarks/README.md).

The runner (:mod:`benchmarks.__main__`, :mod:`benchmarks._runner`) measures the scenarios of
:mod:`benchmarks._scenarios` on pulse-trio and its peers (:mod:`benchmarks._systems`: go-pulse
through ``benchmarks/go``, the Python job queues of :mod:`benchmarks._queues`, the floors),
interleaved round by round. The per-package modules (:mod:`benchmarks.client`,
:mod:`benchmarks.pool`, :mod:`benchmarks.rmap`, :mod:`benchmarks.streaming`) hold the
measurement loops the scenarios reuse. Never part of the test suite: timings are reported,
not asserted.
"""
