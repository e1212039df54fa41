# One style for audit action names (`<entity>.<what happened>`): rename rows written before.

from django.db import migrations

RENAMED = {
    'deployments.release_create': 'release.created',
    'deployments.deploy_plan': 'deployment.planned',
    'deployments.deploy': 'deployment.succeeded',
    'deployments.deploy_failed': 'deployment.failed',
    'deployments.rollback_plan': 'rollback.planned',
    'deployments.rollback': 'rollback.succeeded',
    'monitoring.channel_created': 'channel.created',
    'monitoring.channel_updated': 'channel.changed',
    'monitoring.channel_deleted': 'channel.deleted',
    'monitoring.test_alert_sent': 'channel.test_sent',
    'monitoring.rule_updated': 'alert_rule.changed',
    'monitoring.incident_acknowledged': 'incident.acknowledged',
    'monitoring.incident_resolved': 'incident.resolved',
    'migrations.applied': 'schemas.migrated',
    'migrations.failed': 'schemas.migration_failed',
    'backup.download_link': 'backup.link_issued',
    'backup.database_restored': 'database.restored',
    'backup.database_restore_failed': 'database.restore_failed',
    'backup.drill_passed': 'drill.passed',
    'backup.drill_failed': 'drill.failed',
    'tenant.export_queued': 'export.queued',
    'tenant.export_failed': 'export.failed',
    'tenant.export_deleted': 'export.deleted',
    'tenant.export_download_link': 'export.link_issued',
}


def rename(apps, schema_editor, mapping=RENAMED):
    AuditEvent = apps.get_model('core', 'AuditEvent')
    for old, new in mapping.items():
        AuditEvent.objects.filter(action=old).update(action=new)


def rename_back(apps, schema_editor):
    rename(apps, schema_editor, {new: old for old, new in RENAMED.items()})


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(rename, rename_back),
    ]
