"""The test suite on every Python that pyproject.toml supports: `nox`."""
import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]  # requires-python = ">=3.9"
nox.options.sessions = ["tests"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    # A real build of this checkout (not editable), so the tests import the
    # installed extension; `pytest` keeps the source tree off sys.path.
    # CPython's own executor tests are 3.11's and run only there, under the
    # README's test command: here the matrix runs the behaviour suite.
    session.install(".[test]")
    session.run("pytest", "-p", "no:cacheprovider", "--ignore=tests/test_cpython_suite.py",
                *session.posargs)
