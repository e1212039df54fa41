"""The one place boto3 clients for deployment targets are built (lazily, cached per process).

Credentials are never passed here: boto3 finds them in the worker's environment or instance role.
AWS_ENDPOINT_URL points every client at a stand-in (moto_server) in development and tests.
"""

import threading
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

_clients: dict[tuple, Any] = {}
_lock = threading.Lock()
# Fail fast on an unreachable endpoint; a deployment waits in its own loops, not in retries.
_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


def aws_client(service: str, *, region: str) -> Any:
    key = (service, region, settings.AWS_ENDPOINT_URL)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, region_name=region, endpoint_url=settings.AWS_ENDPOINT_URL or None, config=_CONFIG
            )
        return _clients[key]
