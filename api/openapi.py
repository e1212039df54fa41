"""The committed OpenAPI documents: what the code says, and where they live in the repository."""

import json
from pathlib import Path

from django.conf import settings

from api.apis import shop_api, staff_api

REGENERATE = "DEBUG=1 .venv/bin/python manage.py api_schema"


def documents() -> dict[Path, dict]:
    """Each committed file and the document the code produces for it (servers relative)."""
    docs = Path(settings.BASE_DIR) / "docs"
    import api.urls  # noqa: F401 - mounts the routers on both APIs

    return {
        docs / "openapi.json": staff_api.get_openapi_schema(path_prefix="/api/"),
        docs / "openapi-shop.json": shop_api.get_openapi_schema(path_prefix="/api/shop/"),
    }


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
