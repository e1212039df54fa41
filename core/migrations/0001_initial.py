# The audit trail, moved here from the tenants app (tenants 0003): state only, the table stays.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def content_type_to_core(apps, schema_editor):
    # Keeps the content type's id, so "view audit event" grants held by groups carry over.
    ContentType = apps.get_model('contenttypes', 'ContentType')
    if not ContentType.objects.filter(app_label='core', model='auditevent').exists():
        ContentType.objects.filter(app_label='tenants', model='auditevent').update(app_label='core')


def content_type_to_tenants(apps, schema_editor):
    ContentType = apps.get_model('contenttypes', 'ContentType')
    ContentType.objects.filter(app_label='core', model='auditevent').update(app_label='tenants')


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('tenants', '0003_auditevent_to_core'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                        ('actor_type', models.CharField(choices=[('staff', 'Staff user'), ('tenant_user', 'Tenant user'), ('command', 'Management command'), ('job', 'Background job'), ('system', 'System')], max_length=20)),
                        ('actor', models.CharField(max_length=200)),
                        ('action', models.CharField(db_index=True, max_length=100)),
                        ('tenant_label', models.CharField(blank=True, max_length=63)),
                        ('target', models.CharField(blank=True, max_length=255)),
                        ('details', models.JSONField(blank=True, default=dict)),
                        ('tenant', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='audit_events', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_auditevent',
                        'ordering': ['-created_at', '-id'],
                        'default_permissions': ('view',),
                        'indexes': [models.Index(fields=['tenant', '-created_at'], name='tenants_aud_tenant__e4e645_idx')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_core, content_type_to_tenants),
    ]
