"""The OpenAPI document describes every endpoint of the help article, with its bodies and its errors."""

from __future__ import annotations

from api.app import create_app
from policies.gate import enrolment_required
from twofa.clock import FrozenClock

EXPECTED = {
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/2fa/login"),
    ("post", "/api/v1/auth/2fa/setup"),
    ("post", "/api/v1/auth/2fa/verify"),
    ("post", "/api/v1/auth/2fa/email-otp"),
    ("post", "/api/v1/auth/2fa/verify-email-otp"),
    ("post", "/api/v1/auth/2fa/disable"),
    ("post", "/api/v1/auth/2fa/backup-codes"),
    ("get", "/api/v1/auth/2fa/status"),
    ("get", "/api/v1/auth/login-history"),
    ("get", "/api/v1/auth/sessions"),
    ("delete", "/api/v1/auth/sessions/{session_id}"),
    ("post", "/api/v1/auth/logout"),
    ("post", "/api/v1/api-keys"),
    ("get", "/api/v1/api-keys"),
    ("get", "/api/v1/orgs/{slug}/reports/weekly"),
    ("delete", "/api/v1/api-keys/{key_id}"),
    ("get", "/api/v1/orgs/{slug}/2fa-policy"),
    ("put", "/api/v1/orgs/{slug}/2fa-policy"),
    ("get", "/api/v1/orgs/{slug}/2fa-coverage"),
    ("post", "/api/v1/auth/sessions/revoke-others"),
    ("get", "/api/v1/orgs/{slug}/members"),
    ("get", "/api/v1/orgs/{slug}/audit"),
    ("post", "/api/v1/orgs/{slug}/members/{user_id}/reset-2fa"),
}


def test_every_endpoint_is_documented_with_bodies_and_errors(clock: FrozenClock) -> None:
    doc = create_app(gate=enrolment_required, clock=clock).openapi()
    operations = {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}
    assert set(operations) == EXPECTED
    for key, op in operations.items():
        assert op.get("summary") and op.get("description"), key
        for status in ("401", "403", "404", "409", "422", "429"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (key, status)
        success = next(code for code in op["responses"] if code.startswith("2"))
        assert "content" in op["responses"][success], key
    for method, path in EXPECTED:
        if method in ("post", "put") and not path.endswith(("/logout", "/email-otp", "/revoke-others")):
            assert "requestBody" in operations[(method, path)], (method, path)
