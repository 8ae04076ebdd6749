"""Per-key reads of the topology's tables, answered by whichever worker owns the key.

``app.table_route`` forwards a request to the worker that holds the key's partition, so
any worker answers for the whole cluster.
"""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from pinapp.app import app
from tables import pin_by_id

__all__ = ["PinView"]


@app.page("/pins/{pin_id}")
class PinView(View):
    """A pin from the pin cache: ``200`` with the pin, ``404`` when the cache has none."""

    @app.table_route(table=pin_by_id, match_info="pin_id")
    async def get(self, request: Request, pin_id: str, **kwargs: Any) -> Response:
        pin = pin_by_id.get(pin_id.encode())
        if pin is None:
            return self.error(404, f"pin {pin_id!r} is not in the pin cache")
        return self.json({"pin": pin.asdict(), "served_by": str(self.app.conf.canonical_url)})
