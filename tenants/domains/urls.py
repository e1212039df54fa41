from django.urls import path

from tenants.domains import views

urlpatterns = [
    path("", views.domain_list, name="selfservice_domains"),
    path("add/", views.domain_add, name="selfservice_domain_add"),
    path("status.json", views.domain_status, name="selfservice_domain_status"),
    path("<int:pk>/check/", views.domain_check, name="selfservice_domain_check"),
    path("<int:pk>/remove/", views.domain_remove, name="selfservice_domain_remove"),
    path("<int:pk>/primary/", views.domain_make_primary, name="selfservice_domain_primary"),
]
