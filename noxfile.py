"""Nox sessions for pulse-trio: ``nox`` runs lint, typecheck and tests; ``nox -s demo|bench``.

Each session installs the package into its own virtualenv (reused between runs). Tests and
benchmarks start their own throwaway servers (``redis-server`` on PATH, else the Valkey of the
``embedded`` extra), so no Redis needs to be running. Extra arguments after ``--`` are passed
on: ``nox -s tests -- -k cluster -x``, ``nox -s bench -- --only rmap.get``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (both AnyIO backends, real servers); posargs go to pytest."""
    session.install("-e", ".[dev,embedded]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """``ruff check`` and ``ruff format --check`` over the whole tree."""
    session.install("ruff>=0.17,<0.18")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """``mypy --strict`` over the files listed in ``[tool.mypy]`` of pyproject.toml."""
    session.install("-e", ".[dev,embedded]")
    session.run("mypy", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the replicated-map demo against an embedded server."""
    session.install("-e", ".[embedded]")
    session.run("python", "examples/rmap_demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (``python -m benchmarks``) with every peer; posargs go to the runner."""
    session.install("-e", ".[embedded,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
