"""Fixtures of the state machines (none of their own: see ``_harness.py``).

The machines kill connections at random. The transport closes every connection it loses, so
nothing is left for the garbage collector to report later (the collection after each test,
in ``tests/conftest.py``, would surface an unclosed socket as a warning, an error here); the
reader and sink machines also check at teardown that every connection their blocking reads
borrowed went back to the pool (:func:`tests._util.lent_connections`).
"""
