"""The message table, and the outbox table with its NOTIFY trigger (Centrifugo's schema,
from ``outbox_table.create_table_sql``; ``migrate chat zero`` drops them)."""

from django.conf import settings
from django.db import migrations, models

from centrifuge_asgi.consumers import outbox_table

TABLE = settings.OUTBOX_TABLE


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=200)),
            ],
        ),
        migrations.RunSQL(
            outbox_table.create_table_sql(TABLE, settings.OUTBOX_CHANNEL),
            reverse_sql=outbox_table.drop_table_sql(TABLE),
        ),
    ]
