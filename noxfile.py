"""nox sessions. They run in the project's one environment (.venv, made by scripts/setup.sh), never
in environments of their own: torch is large and is installed exactly once.

    .venv/bin/nox -s tests      the unit and integration tests
    .venv/bin/nox -s lint       ruff
"""

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests", "lint"]


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
