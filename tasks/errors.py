"""Errors that name what a user must fix."""

from casflow.tasks.exits import USAGE, CasError


class InputError(CasError, ValueError):
    """Bad input from a user: a model's samples, a dataset or a checkpoint.

    Never retried: the message says which model, which file and what is wrong.
    """

    exit_code = USAGE

    def __init__(self, problem: str, *, model: str | None = None, source: str | None = None):
        self.problem = problem
        self.model = model
        self.source = source
        where = " ".join(p for p in (f"model '{model}'" if model else "", source or "") if p)
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self):  # raised in a worker process, re-raised in the caller with the same fields
        return _rebuild, (type(self), self.problem, self.model, self.source)

    def for_model(self, model: str) -> "InputError":
        """The same error, naming the model (when the raiser did not know it)."""
        if self.model:
            return self
        return InputError(self.problem, model=model, source=self.source)


def _rebuild(cls: type[InputError], problem: str, model: str | None, source: str | None) -> InputError:
    return cls(problem, model=model, source=source)
