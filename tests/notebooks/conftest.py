"""nbval for the reference chapters (make test): cells run as Jupyter and papermill run them, and no wall-clock limit
of nbval's own can fail a run on a busy machine.

- History: nbval 0.11 executes each cell with ``store_history=False``. IPython decides whether a trailing ``;``
  silences a cell's value by reading the last history entry (``DisplayHook.quiet``), so without history it reads the
  previous cell: a ``plots.x(...);`` cell then shows its figure twice and a ``chapter.save_tables(...);`` cell its
  return value, outputs the references (executed by papermill) do not have. Storing history changes nothing else in
  what a cell prints; only the execution counter advances, which nbval does not compare.
- Limits: nbval gives a starting kernel 10 s to answer and 30 s to open its output channel, and each cell 5 s between
  its reply and its last output message, fixed in its code; a machine busy with other work could exceed them, and no
  test may depend on load. They become ``HANG_S``, which only a hung kernel reaches. The per-cell limit is make
  test's ``--nbval-cell-timeout`` (a day).
"""

from __future__ import annotations

from queue import Empty

import nbval.kernel
import nbval.plugin
import pytest

HANG_S = 600.0
"""Seconds after which a kernel that has not answered is taken for hung (the startup limit make test passes)."""


def _execute_cell_input(self: nbval.kernel.RunningKernel, cell_input: str, allow_stdin: bool | None = None) -> str:
    """``RunningKernel.execute_cell_input`` with ``store_history=True``; returns the request's message id."""
    return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)


def _ensure_iopub_up(self: nbval.kernel.RunningKernel) -> None:
    """``RunningKernel._ensure_iopub_up`` with ``HANG_S`` for its fixed 10 s and 30 s: ask for kernel info until the
    answer's idle status arrives on IOPub (the channel nbval reads outputs from)."""
    for _ in range(int(HANG_S)):
        msg_id = self.kc.kernel_info()
        try:
            self.await_reply(msg_id, timeout=HANG_S)
        except Empty as err:
            raise RuntimeError(f"the kernel did not answer a kernel-info request in {HANG_S:.0f} s") from err
        try:
            self.await_idle(msg_id, 1)
        except Empty:
            continue
        return
    raise RuntimeError(f"the kernel's output channel did not open in {HANG_S:.0f} tries")


nbval.kernel.RunningKernel.execute_cell_input = _execute_cell_input
nbval.kernel.RunningKernel._ensure_iopub_up = _ensure_iopub_up


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each notebook cell ``HANG_S`` (not nbval's 5 s) between its execute reply and its last output message."""
    for item in items:
        if isinstance(item, nbval.plugin.IPyNbCell):
            item.output_timeout = HANG_S
