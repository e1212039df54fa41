"""URLs on the control plane's own host (the public schema)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from tenants.tls_ask import tls_ask

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    # On-demand TLS gate for edges (tenants/tls_ask.py).
    path("internal/tls/ask", tls_ask, name="tls_ask"),
]
