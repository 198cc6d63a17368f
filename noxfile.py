"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s regression``.

Each session installs herobench into its own virtualenv (torch comes from the machine's pip setup)."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole offline test suite (GPU tests skip without a GPU)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "-n", "auto", "--dist", "loadfile", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "herobench", "tests", "benchmarks", "noxfile.py")


@nox.session(python="3.11")
def regression(session: nox.Session) -> None:
    """A fixed slice of the GlyphWorld grid compared with the committed reference values."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "herobench.regression", *session.posargs)
