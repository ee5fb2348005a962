"""`eddy bento` builds a Bento that carries a model version and serves it without MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from features.rows import order_moments

pytestmark = pytest.mark.slow
EDDY = str(Path(sys.executable).parent / "eddy")


def test_a_built_bento_serves_its_packaged_model_version(trained, tmp_path, Server, env_with):
    result, ds = trained
    bundle = result.bundle.save(tmp_path / "bundle")
    env = env_with(tmp_path, BENTOML_HOME=str(tmp_path / "bentoml"), EDDY_MLRUNS_DIR=str(tmp_path / "no-registry"))
    env.pop("PYTHONPATH")  # the Bento must carry its own code
    built = subprocess.run([EDDY, "bento", "--bundle", str(bundle), "--version", "9"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr + built.stdout
    assert "built Bento eddy-service:" in built.stdout and "model version 9" in built.stdout
    listed = subprocess.run([str(Path(sys.executable).parent / "bentoml"), "list", "-o", "json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert '"eddy-service:' in listed.stdout

    server = Server(env, target="eddy-service:latest", cwd=tmp_path)  # not the repository
    try:
        # Started without --host, the Bento listens on loopback only (BentoML's default is every address).
        assert listening_addresses(server.port) == {"127.0.0.1"}
        models = httpx.get(f"{server.url}/models", timeout=10).json()
        assert models["version"] == "9" and models["models"] == {"edd": True, "delay": True, "churn": True}
        ships = ds["shipments"].tail(3)
        expected = result.bundle.predict_rows(result.bundle.shipment_rows(ships, None, order_moments(ships)))
        iso = lambda v: None if pd.isna(v) else pd.Timestamp(v).isoformat()  # noqa: E731
        for (_, row), (_, exp) in zip(ships.iterrows(), expected.iterrows()):
            req = {c: row[c] for c in ("shipment_id", "carrier", "service_level", "origin_region", "destination_region",
                                       "origin_postal", "destination_postal")}
            req.update(ordered_at=iso(row.ordered_at), promised_at=iso(row.promised_at),
                       weight_kg=float(row.weight_kg), value=float(row.value))
            got = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30).json()
            assert abs(pd.Timestamp(got["eta_p50"]) - exp.eta_p50) < pd.Timedelta(seconds=1)
            assert got["model_version"] == "9"
    finally:
        logs = server.stop()
    assert "Traceback" not in logs


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening socket on ``port`` (from /proc, no tools needed)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found
