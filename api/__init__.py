"""casflow from Python.

In a notebook: `evaluate(config)` runs the flow `cas run` runs and returns the run's tables as pandas
DataFrames; `results(store, run=None)` reads a stored run the same way. In a training loop:
`submit_checkpoint(path, model)` hands a new checkpoint to the nightly deployment without waiting.
The README's "From Python: notebooks and training loops" shows both.
"""

from casflow.handoff import NIGHTLY, HandOffError, submit_checkpoint
from casflow.notebook import NoResults, Results, UnknownRun, evaluate, results

__all__ = ["NIGHTLY", "HandOffError", "NoResults", "Results", "UnknownRun", "evaluate", "results", "submit_checkpoint"]
