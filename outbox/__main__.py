"""``python -m outbox`` runs the relay, as ``python -m outbox.relay`` does."""

from __future__ import annotations

from outbox.relay import main

raise SystemExit(main())
