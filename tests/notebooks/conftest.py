"""nbval for the reference chapters (make test): cells run with history, as Jupyter and papermill run them.

nbval 0.11 executes each cell with ``store_history=False``. IPython decides whether a trailing ``;`` silences a
cell's value by reading the last history entry (``DisplayHook.quiet``), so without history it reads the previous
cell: a ``plots.x(...);`` cell then shows its figure twice and a ``chapter.save_tables(...);`` cell its return value,
outputs the references (executed by papermill) do not have. Storing history changes nothing else in what a cell
prints; only the execution counter advances, which nbval does not compare.
"""

from __future__ import annotations

import nbval.kernel


def _execute_cell_input(self: nbval.kernel.RunningKernel, cell_input: str, allow_stdin: bool | None = None) -> str:
    """``RunningKernel.execute_cell_input`` with ``store_history=True``; returns the request's message id."""
    return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)


nbval.kernel.RunningKernel.execute_cell_input = _execute_cell_input
