"""Monitoring's services, one module per job; import from the module itself.

- ``probing``: uptime probe rounds (run, record, prune).
- ``channels``: alert channels (validate, create, update, delete).
- ``alerts``: alert rules evaluated into incidents, acknowledge and resolve, deliveries, test alerts.
"""
