"""Helpers that run in other processes (RQ worker, a reader loop) during the isolation tests."""

import json
import os
import sys
import threading

from django.db import DatabaseError, connection

# Model imports live in the functions: this module also runs as a script before django.setup().


def product_names(schema_name: str) -> list[str]:
    """An RQ job that reads one tenant's products, the way every tenant-scoped job does."""
    from storefront.models import Product
    from tenants.models import Tenant

    connection.set_tenant(Tenant.objects.get(schema_name=schema_name))
    return sorted(Product.objects.values_list("name", flat=True))


def product_names_without_tenant() -> list[str]:
    """An RQ job that forgets to pick its tenant: it must not see the previous job's tenant."""
    from storefront.models import Product

    return sorted(Product.objects.values_list("name", flat=True))


def reader_loop(rounds: int, threads: int) -> dict:
    """Threads (each with its own connection) read every tenant in turn and check the rows."""
    from storefront.models import Product
    from tenants.models import Tenant

    tenants = list(Tenant.objects.filter(status="active"))
    counts = {"reads": 0, "wrong": 0}
    lock = threading.Lock()

    def work():
        reads = wrong = 0
        for _ in range(rounds):
            for tenant in tenants:
                connection.set_tenant(tenant)
                reads += 1
                try:
                    names = list(Product.objects.values_list("name", flat=True))
                except DatabaseError:  # e.g. the query ran where the table does not exist
                    wrong += 1
                    continue
                wrong += any(not name.startswith(tenant.subdomain + "-") for name in names) or not names
        connection.close()
        with lock:
            counts["reads"] += reads
            counts["wrong"] += wrong

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return counts


if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform_site.settings")
    django.setup()
    print(json.dumps(reader_loop(int(sys.argv[1]), int(sys.argv[2]))))
