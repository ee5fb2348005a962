"""An empty BentoML service with Eddy's request schema: the floor under /eta's latency.

It parses and validates the same ``ShipmentIn`` body and answers a constant, so
``serve_latency.py`` can show what BentoML, HTTP and the load generator cost on this
machine before any feature or model work (``/churn`` likewise with ``ChurnIn``).
"""

from __future__ import annotations

import bentoml

from serving.schemas import ChurnIn, ShipmentIn


@bentoml.service(name="eddy-floor")
class Floor:
    @bentoml.api(route="/eta")
    async def eta(self, shipment: ShipmentIn) -> dict:
        return {"shipment_id": shipment.shipment_id}

    @bentoml.api(route="/churn")
    def churn(self, request: ChurnIn) -> dict:  # sync, as the real /churn
        return {"customer_id": request.customer_id}
