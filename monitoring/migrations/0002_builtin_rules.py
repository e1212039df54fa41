from django.db import migrations

# The built-in rules with their default thresholds (meanings in monitoring/rules.py SPECS).
RULES = {
    "certificate_expiring": (14, "warning"),
    "backup_stale": (30, "critical"),
    "restore_drill_failed": (7, "critical"),
    "deployment_failed": (72, "critical"),
    "shop_down": (3, "critical"),
    "queue_backlog": (100, "warning"),
    "failed_jobs": (1, "warning"),
    "worker_missing": (1, "critical"),
    # Added with off-site copies; on databases migrated before, rules_ensure() creates them.
    "offsite_copy_lag": (120, "critical"),
    "offsite_copy_failed": (3, "warning"),
    "dr_drill_failed": (35, "critical"),
    # Added later (0005); existing installs get its row from rules_ensure() at the next evaluation.
    "wal_archive_stale": (60, "critical"),
}


def create_rules(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for kind, (threshold, severity) in RULES.items():
        AlertRule.objects.get_or_create(kind=kind, defaults={"threshold": threshold, "severity": severity})


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial")]
    operations = [migrations.RunPython(create_rules, migrations.RunPython.noop)]
