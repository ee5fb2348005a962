"""Shared fixtures: small data sets built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.simulate import SimConfig, simulate, write_truth
from data.write import write_data_set
from eddy import settings


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A bundle trained (without MLflow) on a small simulated world, and its data set."""
    from data.load import load_data_set
    from training.train import train

    folder = tmp_path_factory.mktemp("train")
    sim = simulate(SimConfig(customers=3000, seed=13))
    write_data_set(sim.tables, folder)
    write_truth(sim.truth, folder)
    ds = load_data_set(folder)
    return train(ds), ds
