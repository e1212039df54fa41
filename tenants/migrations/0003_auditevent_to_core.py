# The audit trail moved to the platform-wide `core` app. Only Django's model state moves: the
# table keeps its name (core.AuditEvent sets db_table), so no row is copied and nothing locks.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0002_custom_domains'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='AuditEvent')],
            database_operations=[],
        ),
    ]
