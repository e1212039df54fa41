"""Signals the core sends so the apps built on it can hook in without being imported here."""

from django.dispatch import Signal

# Sent (sender=Tenant, tenant=..., actor=...) just before a tenant's schema is dropped. Sent with
# send(), not send_robust(): a receiver that raises (the final backup failed) stops the drop.
schema_pre_drop = Signal()
