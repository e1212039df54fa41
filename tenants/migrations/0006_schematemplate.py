from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tenants', '0005_platform_certificate'),
    ]

    operations = [
        migrations.CreateModel(
            name='SchemaTemplate',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=64, unique=True)),
                ('script', models.TextField()),
                ('migrations', models.PositiveIntegerField()),
                ('statements', models.PositiveIntegerField()),
                ('refused', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
