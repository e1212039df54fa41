"""Who may read /metrics and /readyz details: the token, when set, always; otherwise the client
address worked out from TRUSTED_PROXIES (an edge on loopback no longer makes everyone loopback)."""

import pytest
from django.test import override_settings

SCRAPE = {"HTTP_HOST": "metrics.internal"}


@pytest.mark.django_db
def test_a_set_token_is_always_required(client):
    with override_settings(METRICS_TOKEN="s3cret-token", METRICS_ALLOWED_IPS=["127.0.0.1/32"]):
        # Loopback used to be enough without a header; with a token it never is.
        refused = client.get("/metrics", **SCRAPE)
        assert refused.status_code == 403
        assert refused.json()["error"] == "Send `Authorization: Bearer <METRICS_TOKEN>`."
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **SCRAPE).status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-token", **SCRAPE).status_code == 403
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **SCRAPE).status_code == 200
        # /readyz details follow the same rule.
        summary = client.get("/readyz", **SCRAPE).json()["checks"]["database"]
        assert set(summary) == {"ok", "detail"}
        detailed = client.get("/readyz", HTTP_AUTHORIZATION="Bearer s3cret-token", **SCRAPE).json()
        assert "ms" in detailed["checks"]["database"]


@pytest.mark.django_db
def test_the_allow_list_sees_the_client_behind_a_trusted_edge(client):
    edge = {"REMOTE_ADDR": "127.0.0.1", **SCRAPE}
    loopback_edge = {"METRICS_TOKEN": "", "TRUSTED_PROXIES": ["127.0.0.1/32"]}
    with override_settings(METRICS_ALLOWED_IPS=["127.0.0.1/32"], **loopback_edge):
        # A stranger's request relayed by the edge on loopback is the stranger's, not loopback's,
        # whatever the stranger wrote into X-Forwarded-For itself.
        relayed = client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1, 203.0.113.9", **edge)
        assert relayed.status_code == 403
        assert "METRICS_ALLOWED_IPS" in relayed.json()["error"]
        readyz = client.get("/readyz", HTTP_X_FORWARDED_FOR="203.0.113.9", **edge).json()
        assert "ms" not in readyz["checks"]["database"]
        # Prometheus on loopback, not through the edge, is still loopback.
        assert client.get("/metrics", **edge).status_code == 200
    with override_settings(METRICS_ALLOWED_IPS=["203.0.113.0/24"], **loopback_edge):
        assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9", **edge).status_code == 200
    with override_settings(METRICS_TOKEN="", METRICS_ALLOWED_IPS=["127.0.0.1/32"], TRUSTED_PROXIES=[]):
        # From an untrusted peer the header is ignored: naming loopback gets a stranger nowhere.
        spoofed = client.get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1", REMOTE_ADDR="203.0.113.9",
                             **SCRAPE)
        assert spoofed.status_code == 403
