"""Shared fixtures: small data sets built once per test session."""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

import pytest

from data.simulate import SimConfig, simulate, write_truth
from data.write import write_data_set
from eddy import settings

# `make test` runs the suite on two xdist workers with `--dist loadfile`: a module's tests
# stay on one worker, so its module fixtures are built once. The modules that start Dask
# clusters share one unit of work, so no two clusters compete for the cores or their ports
# at once. Units go out longest first, so no long one ends up alone at the end.
SHARED_UNIT = {"tests/model/test_distributed.py": "dask", "tests/code/test_registry.py": "dask"}
LONGEST_FIRST = ["dask", "tests/model/test_backtest.py", "tests/e2e/test_monitoring.py", "tests/e2e/test_service.py",
                 "tests/e2e/test_bento.py", "tests/e2e/test_review.py", "tests/code/test_registry_safety.py",
                 "tests/model/test_training.py", "tests/model/test_behaviour.py"]


@pytest.fixture(scope="session")
def benchmark_module():
    """A script of ``benchmarks/`` imported as a module (they are scripts, not a package)."""
    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED_UNIT.get(module, module)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        unit = unit_of(item.nodeid)
        return LONGEST_FIRST.index(unit) if unit in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: collection order within a unit


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: pytest without it runs serially
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return SharedUnits(config, log)


@pytest.fixture(scope="session")
def sim_small():
    """A small simulated world (about 7k shipments), in memory."""
    return simulate(SimConfig(customers=2000, seed=11))


@pytest.fixture(scope="session")
def sim_dir(sim_small, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sim")
    write_data_set(sim_small.tables, folder)
    write_truth(sim_small.truth, folder)
    return folder


@pytest.fixture(scope="session")
def olist_src() -> Path:
    src = settings.olist_sample_dir()
    if not (src / "olist_orders_dataset.csv").exists():
        pytest.fail(f"the shared Olist sample is missing at {src}; it ships beside the repository")
    return src


def made_once(tmp_path_factory, name: str, make):
    """``make()``, once per run: under xdist the first worker to ask makes it and the
    others read what it pickled (a training costs more than half a minute of CPU)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make()
    import cloudpickle  # the BG/NBD baseline holds local functions plain pickle refuses

    path = tmp_path_factory.getbasetemp().parent / f"{name}.pickle"  # the run's folder, shared by its workers
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return cloudpickle.loads(path.read_bytes())
        made = make()
        path.write_bytes(cloudpickle.dumps(made))
        return made


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A bundle trained (without MLflow) on a small simulated world, and its data set."""
    from data.load import load_data_set
    from training.train import train

    def make():
        folder = tmp_path_factory.mktemp("train")
        sim = simulate(SimConfig(customers=3000, seed=13))
        write_data_set(sim.tables, folder)
        write_truth(sim.truth, folder)
        ds = load_data_set(folder)
        return train(ds), ds

    return made_once(tmp_path_factory, "trained", make)
