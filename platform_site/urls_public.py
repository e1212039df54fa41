"""URLs on the control plane's own host (the public schema)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django_rq import urls as rq_urls

from api.urls import control_plane_urlpatterns as api_urlpatterns
from core.roles import rq_guarded_urlpatterns
from core.two_factor import admin_site_setup, staff_2fa_setup
from tenants.domains.tls_ask import tls_ask

# The admin login asks for a two-factor code from staff who set one up (core/two_factor.py).
admin_site_setup(admin.site)

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # Before admin/: any staff user sets up their own authenticator app.
    path("admin/2fa/setup/", staff_2fa_setup, name="staff_2fa_setup"),
    path("admin/", admin.site.urls),
    # Operators only (the dashboard can empty queues); see core.roles.
    path("django-rq/", include((rq_guarded_urlpatterns(rq_urls.urlpatterns), rq_urls.app_name))),
    # On-demand TLS gate for edges (tenants/domains/tls_ask.py).
    path("internal/tls/ask", tls_ask, name="tls_ask"),
    # The staff API, its schema and docs (api/urls.py, docs/api.md).
    *api_urlpatterns,
]

# A staff login refused anything here is audited (staff.access_denied), then sees Django's 403.
handler403 = "core.login.staff_access_denied"
