"""URLs on tenant hosts (<subdomain>.<base domain> and verified custom domains)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from api.selfservice import api_key_revoke, api_keys_page
from api.urls import shop_urlpatterns as api_urlpatterns
from storefront.views import product_list

urlpatterns = [
    path("", product_list, name="storefront"),
    path("account/login/", auth_views.LoginView.as_view(), name="login"),
    # Back to the shop's login page (the default page is the admin's, which has no URLs here).
    path("account/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path(
        "account/set-password/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(success_url="/account/set-password/done/"),
        name="owner_set_password",
    ),
    path(
        "account/set-password/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="owner_set_password_done",
    ),
    # Custom domains self-service (tenants/domains/views.py).
    path("account/domains/", include("tenants.domains.urls")),
    # The owner's API keys for this shop, and the shop API they use (api/, docs/api.md).
    path("account/api-keys/", api_keys_page, name="selfservice_api_keys"),
    path("account/api-keys/<int:pk>/revoke/", api_key_revoke, name="selfservice_api_key_revoke"),
    *api_urlpatterns,
]
