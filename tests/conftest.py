"""Shared test configuration: GPU tests (`@pytest.mark.gpu`) skip cleanly where no Hopper GPU is
visible; hypothesis profiles keep CI (2 CPU cores) fast."""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("gpu", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# a few examples per test under compute-sanitizer (10-100x slower)
settings.register_profile("sanitizer", max_examples=3, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _hopper_visible() -> bool:
    try:
        import torch
        return torch.cuda.is_available() and torch.cuda.get_device_capability(0) == (9, 0)
    except Exception:
        return False


HAS_HOPPER = _hopper_visible()


def pytest_collection_modifyitems(config, items):
    if HAS_HOPPER:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA Hopper GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, private JIT cache folder for one test."""
    d = tmp_path / "jitkern-cache"
    monkeypatch.setenv("JITKERN_CACHE_DIR", str(d))
    return d
