"""Signals the core sends so the apps built on it can hook in without being imported here."""

from django.dispatch import Signal

# Sent (sender=Tenant, tenant=..., actor=...) just before a tenant's schema is dropped. Sent with
# send(), not send_robust(): a receiver that raises (the final backup failed) stops the drop.
schema_pre_drop = Signal()

# Sent (sender=None, actor=..., reason=...) after what the edge serves changed: a custom domain
# became active or stopped being served, or a certificate (a domain's or the platform wildcard)
# was issued, renewed or removed. Receivers (deployment targets' edges) re-sync from the selectors.
edge_changed = Signal()
