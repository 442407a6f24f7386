"""The provider's operator side (ledger and faults) for tests, the demo and scenarios."""

from __future__ import annotations

from typing import Any

import httpx

from payments.client import HttpApi


class ProviderControl(HttpApi):
    """Reads the provider's ledger and changes its faults while it runs."""

    def __init__(self, base_url: str, timeout_seconds: float = 5.0) -> None:
        super().__init__(base_url, timeout_seconds)

    def healthy(self) -> bool:
        try:
            return self._http.get("/health").status_code == httpx.codes.OK
        except httpx.TransportError:
            return False

    def summary(self) -> dict[str, int]:
        """``GET /_ledger``: charges, declines, refunds, voids, replays, conflicts, cents."""
        return dict(self._get("/_ledger"))

    def charges(self) -> list[dict[str, Any]]:
        """``GET /_ledger/charges``: one entry per charged key (status, refunded)."""
        return list(self._get("/_ledger/charges")["charges"])

    def voided_keys(self) -> list[str]:
        return list(self._get("/_ledger/charges")["voided_keys"])

    def faults(self) -> dict[str, float]:
        return dict(self._get("/_control/faults"))

    def set_faults(self, **changes: float) -> dict[str, float]:
        """Change some faults (``error_rate=1.0``...); the others keep their values."""
        response = self._http.post("/_control/faults", json=changes)
        response.raise_for_status()
        return dict(response.json())

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()
