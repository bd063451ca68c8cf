"""Every endpoint refuses no, bad and revoked tokens (401) and too low a role (403).

The cases come from the app's own route table (the role each route declares), checked
against the operator contract's list of endpoints, so a new endpoint is covered the day
it is added and a missing one is noticed. Real uvicorn server, real SQLite token store.
"""

from __future__ import annotations

import re

import httpx
import pytest
from facescreen.alerts.store.records import ROLES
from facescreen.api.auth import PUBLIC, GuardedRoute

from tests.api.conftest import Api

CONTRACT = {
    ("GET", "/api/v1/health"), ("GET", "/api/v1/me"), ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/alerts/{alert_id}"), ("GET", "/api/v1/alerts/{alert_id}/crop"),
    ("GET", "/api/v1/alerts/stream"), ("POST", "/api/v1/alerts/{alert_id}/acknowledge"),
    ("POST", "/api/v1/alerts/{alert_id}/reject"), ("GET", "/api/v1/watchlists"),
    ("POST", "/api/v1/watchlists"), ("GET", "/api/v1/watchlists/{name}"),
    ("PATCH", "/api/v1/watchlists/{name}"), ("DELETE", "/api/v1/watchlists/{name}"),
    ("GET", "/api/v1/subjects"), ("POST", "/api/v1/subjects"),
    ("GET", "/api/v1/subjects/{subject_id}"), ("POST", "/api/v1/subjects/{subject_id}/images"),
    ("DELETE", "/api/v1/subjects/{subject_id}/images/{image_id}"),
    ("PUT", "/api/v1/subjects/{subject_id}/watchlists/{watchlist}"),
    ("DELETE", "/api/v1/subjects/{subject_id}/watchlists/{watchlist}"),
    ("DELETE", "/api/v1/subjects/{subject_id}"), ("POST", "/api/v1/search"),
    ("GET", "/api/v1/cameras"), ("GET", "/api/v1/audit"),
}
ALERT_ID = "6f1c2d3e-0000-4000-8000-000000000001"


def routes(api: Api) -> list[tuple[str, str, str]]:
    """(method, path, role) of every operation the running server publishes."""
    spec = api.client.get("/openapi.json").json()
    return [(method.upper(), path, op.get("x-required-role", "undeclared"))
            for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_route_is_guarded() -> None:
    from facescreen.api.app import ROUTERS

    found = [r for router in ROUTERS for r in router.routes]
    assert found and all(isinstance(r, GuardedRoute) for r in found)
    with pytest.raises(ValueError, match="declares no role"):
        GuardedRoute("/x", lambda: None)


def concrete(path: str) -> str:
    return re.sub(r"\{alert_id\}", ALERT_ID, re.sub(r"\{(\w+)\}", r"x-\1", path))


def test_route_table_is_the_contract(api: Api) -> None:
    table = routes(api)
    assert {(m, p) for m, p, _ in table} == CONTRACT
    spec = api.client.get("/openapi.json").json()
    for method, path, role in table:
        assert spec["paths"][path][method.lower()]["x-required-role"] == role
        assert role in (PUBLIC, *ROLES)
    public = [(m, p) for m, p, r in table if r == PUBLIC]
    assert public == [("GET", "/api/v1/health")]


def test_every_endpoint_401_without_a_valid_token(api: Api) -> None:
    bad_headers = {
        "none": {},
        "unknown": {"Authorization": "Bearer fst_not-a-real-token"},
        "revoked": api.auth("revoked"),
        "not bearer": {"Authorization": f"Basic {api.secrets['admin']}"},
        "empty bearer": {"Authorization": "Bearer"},
        "huge": {"Authorization": "Bearer " + "a" * 5000},
    }
    checked = 0
    for method, path, role in routes(api):
        if role == PUBLIC:
            continue
        for why, headers in bad_headers.items():
            # A body that would fail validation: the token must be refused first.
            r = api.client.request(method, concrete(path), headers=headers,
                                   content=b"{not json", timeout=10)
            assert r.status_code == 401, (method, path, why, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["detail"]
            checked += 1
    assert checked == 6 * (len(CONTRACT) - 1)


def test_every_endpoint_403_below_its_role(api: Api) -> None:
    checked = 0
    for method, path, role in routes(api):
        if role == PUBLIC:
            continue
        for lower in ROLES[:ROLES.index(role)]:
            r = api.call(method, concrete(path), who=lower, content=b"{not json")
            assert r.status_code == 403, (method, path, lower, r.text)
            assert role in r.json()["detail"]
            checked += 1
    roles = [r for _, _, r in routes(api)]
    assert (roles.count("reviewer"), roles.count("admin")) == (3, 10)
    assert checked == 3 * 1 + 10 * 2


def test_each_role_passes_its_own_routes(api: Api) -> None:
    """Not 401/403 with the role a route declares (the handler's own answer comes back)."""
    for method, path, role in routes(api):
        if role == PUBLIC or path.endswith("/stream"):
            continue
        r = api.call(method, concrete(path), who=role, json={})
        assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.text)


def test_health_is_public_and_says_little(api: Api) -> None:
    r = api.client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"alert_store": "ok", "watchlist_store": "ok"}}


def test_me_names_the_token(api: Api) -> None:
    r = api.call("GET", "/api/v1/me", who="reviewer")
    assert r.json() == {"token_id": api.token_ids["reviewer"], "name": "test-reviewer",
                        "role": "reviewer"}


def test_query_token_only_for_the_stream(api: Api) -> None:
    secret = api.secrets["viewer"]
    assert api.client.get(f"/api/v1/me?access_token={secret}").status_code == 401
    assert api.client.get(f"/api/v1/alerts?access_token={secret}").status_code == 401
    revoked = api.secrets["revoked"]
    assert api.client.get(f"/api/v1/alerts/stream?access_token={revoked}").status_code == 401
    with api.client.stream("GET", f"/api/v1/alerts/stream?access_token={secret}") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        first = next(r.iter_lines())
        assert first.startswith(":") or first.startswith("retry")


@pytest.mark.parametrize("who", ["viewer", "reviewer"])
def test_revoking_takes_effect_at_once(api: Api, who: str) -> None:
    assert api.call("GET", "/api/v1/me", who=who).status_code == 200
    api.ctx.alerts.revoke_token(api.token_ids[who])
    r = api.call("GET", "/api/v1/me", who=who)
    assert r.status_code == 401
    assert isinstance(api.client, httpx.Client)
