"""Admin paths built from URL names, never hard-coded `/admin/...` strings."""

from functools import lru_cache
from urllib.parse import quote

from django.conf import settings
from django.db.models import Model
from django.urls import reverse

_PK = "__pk__"


@lru_cache(maxsize=256)
def _path_template(app_label: str, model_name: str, view: str) -> str:
    name = f"admin:{app_label}_{model_name}_{view}"
    # The admin is on the control-plane host's URLconf, whichever host (or job) asks.
    # Reversed once per view, then filled in: selectors build thousands of links per call.
    args = [] if view == "changelist" else [_PK]
    return reverse(name, args=args, urlconf=settings.PUBLIC_SCHEMA_URLCONF)


def admin_path(model: type[Model] | Model, view: str = "change", *, pk: object = None) -> str:
    """The admin path of a model's changelist (``view="changelist"``) or of one object's page.

    ``admin_path(domain)`` is the domain's change page; ``admin_path(Tenant, pk=tid)`` the same
    for an id alone; ``admin_path(Backup, "changelist")`` the list.
    """
    meta = model._meta
    template = _path_template(meta.app_label, meta.model_name, view)
    if view == "changelist":
        return template
    if pk is None and isinstance(model, Model):
        pk = model.pk
    return template.replace(_PK, quote(str(pk), safe=""))
