"""Shared test settings: the automatic dtype is the same on every machine.

``layerfusion.devices`` picks bf16 on CPUs with native bf16 and fp32 elsewhere. Tests that load a model without a
dtype compare vectors at fp32 tolerances, so for the whole session every test (and every module-scoped fixture) sees
a CPU without bf16 flags unless it sets the flags itself (``tests/test_devices.py`` does); the verdict then does not
depend on the machine running the suite.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cpu_without_native_bf16():
    from layerfusion import devices

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2"}))
        yield


@pytest.fixture(autouse=True)
def _registries_restored():
    """Every test starts and ends with the shipped model and dataset registries (tests register tiny models)."""
    from layerfusion.testing import registries_restored

    with registries_restored():
        yield
