"""URLs on the control plane's own host (the public schema)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from django_rq import urls as rq_urls

from tenants.roles import rq_guarded_urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # Operators only (the dashboard can empty queues); see tenants.roles.
    path("django-rq/", include((rq_guarded_urlpatterns(rq_urls.urlpatterns), rq_urls.app_name))),
]
