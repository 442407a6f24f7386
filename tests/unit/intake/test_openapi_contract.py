"""The published contract: the checked-in ``intake/openapi.json`` is what the app serves, and
it names every route the app has."""

from __future__ import annotations

import json

from intake_http_stack import MakeHarness
from starlette.routing import Route

from intake.openapi import CHECKED_IN, openapi_json


def test_openapi__the_checked_in_document_is_the_apps(make_harness: MakeHarness) -> None:
    served = make_harness().client.get("/openapi.json")

    assert served.status_code == 200
    assert CHECKED_IN.read_text() == openapi_json(), (
        "intake/openapi.json is stale: run `python -m intake --write-openapi` and review the diff"
    )
    assert served.json() == json.loads(CHECKED_IN.read_text())


def test_openapi__documents_every_route_and_method(make_harness: MakeHarness) -> None:
    app = make_harness().client.app
    routes = {
        (route.path, method.lower())
        for route in app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and route.path != "/openapi.json"
        for method in (route.methods or ()) - {"HEAD"}
    }
    paths = json.loads(CHECKED_IN.read_text())["paths"]

    documented = {(path, method) for path, operations in paths.items() for method in operations}
    assert documented == routes
