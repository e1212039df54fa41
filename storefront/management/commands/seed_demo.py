import secrets
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from core.db import connection
from core.roles import SUPPORT, roles_sync
from storefront.models import Product
from storefront.services import product_create
from tenants.management.base import TenantCommand
from tenants.models import Plan, Tenant
from tenants.services import tenant_provision

PLANS = [
    dict(name="Starter", slug="starter", monthly_price=Decimal("0"), max_products=25,
         max_custom_domains=0, max_storage_mb=100, backup_retention_days=7, backup_frequency="daily"),
    dict(name="Growth", slug="growth", monthly_price=Decimal("49"), max_products=1000,
         max_custom_domains=3, max_storage_mb=2000, backup_retention_days=30, backup_frequency="hourly"),
    dict(name="Scale", slug="scale", monthly_price=Decimal("299"), max_products=100000,
         max_custom_domains=25, max_storage_mb=20000, backup_retention_days=90, backup_frequency="hourly"),
]
SHOPS = [
    ("acme-shoes", "Acme Shoes", "growth", ["Trail runner", "Oxford brogue", "Canvas sneaker"]),
    ("globex", "Globex Outfitters", "starter", ["Rain jacket", "Wool beanie"]),
    ("initech", "Initech Supplies", "scale", ["Red stapler", "TPS report binder", "Desk lamp", "Mug"]),
]


class Command(TenantCommand):
    help = (
        "Load demo data (plans, three shops with products, staff roles, an admin and a read-only "
        "support login). Safe to re-run."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password-file", help="Where the staff password is kept between runs")

    def run(self, *args, **options):
        for fields in PLANS:
            Plan.objects.update_or_create(slug=fields["slug"], defaults=fields)
        roles_sync()
        self._staff_user(options.get("password_file"))
        for subdomain, name, plan, products in SHOPS:
            tenant = Tenant.objects.filter(subdomain=subdomain).first()
            if tenant is None or tenant.status != Tenant.Status.ACTIVE:
                tenant = tenant_provision(
                    subdomain=subdomain, name=name, plan=plan,
                    owner_email=f"owner@{subdomain}.test", actor=self.actor,
                ).tenant
            connection.set_tenant(tenant)
            try:
                for i, product in enumerate(products):
                    if not Product.objects.filter(name=product).exists():
                        product_create(tenant=tenant, name=product, price=Decimal(19 + 10 * i),
                                       actor=self.actor)
            finally:
                connection.set_schema_to_public()
        self.stdout.write(f"Demo data ready: {len(PLANS)} plans, {len(SHOPS)} shops.")

    def _staff_user(self, password_file: str | None) -> None:
        path = Path(password_file) if password_file else None
        if path and path.exists():
            password = path.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(password)
                path.chmod(0o600)
        User = get_user_model()
        user, _ = User.objects.get_or_create(username="admin", defaults={"email": "admin@platform.test"})
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        # A read-only colleague to show the roles: same demo password, "Platform support" only.
        support, _ = User.objects.get_or_create(
            username="support", defaults={"email": "support@platform.test"}
        )
        support.is_staff, support.is_superuser = True, False
        support.set_password(password)
        support.save()
        support.groups.set([Group.objects.get(name=SUPPORT)])
        if not path:
            self.stdout.write(f"Staff login: admin / {password}")
            self.stdout.write(f"Read-only support login: support / {password}")
