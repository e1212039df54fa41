"""The job dashboard: django-rq's own, kept to operators (it can empty queues)."""

from django.contrib import admin
from django_rq import admin as rq_admin  # registers its dashboard now, so we can replace it below
from django_rq.models import Dashboard

from core.roles import RQ_DASHBOARD_PERMISSION, rq_guarded_urlpatterns


class OperatorsQueueAdmin(rq_admin.QueueAdmin):
    """django-rq's dashboard lets any staff user empty queues; keep it to operators."""

    def has_module_permission(self, request):
        return request.user.has_perm(RQ_DASHBOARD_PERMISSION)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(RQ_DASHBOARD_PERMISSION)

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm(RQ_DASHBOARD_PERMISSION)

    def has_delete_permission(self, request, obj=None):
        return False  # a page, not rows (core.access: nobody)

    def get_urls(self):
        return rq_guarded_urlpatterns(super().get_urls())


if admin.site.is_registered(Dashboard):
    admin.site.unregister(Dashboard)
    admin.site.register(Dashboard, OperatorsQueueAdmin)
