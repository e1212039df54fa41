"""API keys: staff keys (the SaaS's own backend) and shop keys (one shop's owner).

Only the sha256 of a key is stored; the whole key is shown once, when it is made. The visible
prefix (``plt_AbC3dE9x``) names a key in lists and in the audit log without revealing it.
"""

from django.db import models
from django.utils import timezone

# Staff scopes. `backups:restore` is offered but never ticked by default (operators only).
SCOPES = {
    "tenants:read": "Read shops, their usage and health",
    "tenants:write": "Create, suspend, resume, re-plan and deprovision shops",
    "domains:read": "Read custom domains and their DNS records",
    "domains:write": "Add, check, make primary and remove custom domains",
    "backups:read": "List backups and exports",
    "backups:write": "Request backups and exports",
    "backups:restore": "Restore a shop from a backup (replaces its data)",
    "deployments:read": "Read releases and deployments",
    "deployments:write": "Create releases, deploy, roll back",
    "webhooks:read": "Read this key's webhook endpoints and their deliveries",
    "webhooks:write": "Register, change, rotate, re-send and delete this key's webhook endpoints",
}
DEFAULT_SCOPES = [s for s in SCOPES if s != "backups:restore"]
# A shop key only ever reaches its own shop's domains, usage and webhook endpoints.
SHOP_SCOPES = {
    "domains:read": "Read this shop's domains, DNS records and usage",
    "domains:write": "Add, check, make primary and remove this shop's domains",
    "webhooks:read": "Read this key's webhook endpoints (this shop's events) and their deliveries",
    "webhooks:write": "Register, change, rotate, re-send and delete this key's webhook endpoints",
}


class APIKey(models.Model):
    class Kind(models.TextChoices):
        STAFF = "staff", "Staff key"
        SHOP = "shop", "Shop key"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.STAFF)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    token_sha256 = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    # Shop keys only: the one shop this key may reach.
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        # Keys are made through api.keys (shown once) and revoked, never edited or deleted.
        default_permissions = ("add", "view")
        permissions = [("revoke_apikey", "Can revoke API keys")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="staff", tenant__isnull=True)
                | models.Q(kind="shop", tenant__isnull=False),
                name="api_key_shop_keys_have_a_shop",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    def usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
