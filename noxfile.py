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
    session.install("-e", ".[dev,embedded,cli]")
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
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html, warnings as errors."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
        *session.posargs,
    )  # fmt: skip


@nox.session
def demo(session: nox.Session) -> None:
    """Run ``pulse-trio demo`` (embedded server unless ``-- --redis-url URL``)."""
    session.install("-e", ".[cli,embedded]")
    session.run("pulse-trio", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks (``python -m benchmarks``) with every peer; posargs go to the runner."""
    session.install("-e", ".[embedded,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
