"""An empty BentoML service with Eddy's request schema: the floor under /eta's latency.

It parses and validates the same ``ShipmentIn`` body and answers a constant, so
``serve_latency.py`` can show what BentoML, HTTP and the load generator cost on this
machine before any feature or model work.
"""

from __future__ import annotations

import bentoml

from serving.schemas import ShipmentIn


@bentoml.service(name="eddy-floor")
class Floor:
    @bentoml.api(route="/eta")
    async def eta(self, shipment: ShipmentIn) -> dict:
        return {"shipment_id": shipment.shipment_id}
