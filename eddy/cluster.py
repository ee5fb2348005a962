"""Where distributed work runs: a Dask cluster named by ``--cluster``.

``local`` starts a ``LocalCluster`` on this machine (one single-threaded worker per core,
a memory limit each); anything else is a scheduler address (``tcp://host:8786``) of a
cluster started elsewhere (``dask scheduler`` plus ``dask worker``, dask-kubernetes,
dask-yarn). Without ``--cluster`` nothing here is used: every stage runs in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from eddy import settings


@contextlib.contextmanager
def connect(address: str, say: Callable[[str], None] = print, **local_options) -> Iterator:
    """A ``distributed.Client`` for ``address`` until the block ends (a local cluster stops
    with it); ``say`` gets one line with the dashboard link."""
    from distributed import Client, LocalCluster

    if address == "local":
        options = {"n_workers": settings.dask_workers(), "threads_per_worker": 1,
                   "memory_limit": settings.dask_worker_memory(), "dashboard_address": ":0", **local_options}
        with LocalCluster(**options) as cluster, Client(cluster) as client:
            say(f"Dask: local cluster of {len(cluster.workers)} workers ({options['memory_limit']} each); "
                f"dashboard {client.dashboard_link}")
            yield client
        return
    if "://" not in address:
        raise ValueError(f"--cluster must be 'local' or a scheduler address such as tcp://host:8786, not {address!r}")
    with Client(address, timeout="30s") as client:
        say(f"Dask: scheduler {address}, {len(client.scheduler_info()['workers'])} workers; dashboard {client.dashboard_link}")
        yield client
