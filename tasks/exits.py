"""The errors that end the `cas` command with a status of their own, and those statuses.

A leaf: this module imports nothing, so storage/ may import it without reaching into the rest of tasks/
(tests/test_layering.py allows storage/ exactly this module of tasks/, and checks that it stays a leaf).
Each error class says its exit status; the command prints the message as one line and exits with it."""

FAILED = 1  # something could not be done: a model failed, a store did not answer, a file could not be read
USAGE = 2  # the user must change what was asked: a bad config or command line, unknown runs
REGRESSED = 3  # --fail-on-regression, and a model got significantly worse
UNJUDGED = 4  # --fail-on-regression, and a model could not be compared with its previous run (verdict unknown)
SERVER_LOST = 5  # the Prefect server stopped answering after the results were committed (they are whole)


class CasError(Exception):
    """An error whose message is one line naming the thing and the problem; `exit_code` is the `cas`
    command's status for it. Subclasses keep their usual base too (ValueError, ConnectionError), which
    callers and retry rules test for."""

    exit_code: int = FAILED
