"""Settings of the Django outbox example: one app, PostgreSQL, and the centrifuge-asgi node.

``DJANGO_OUTBOX_SCHEMA`` picks the PostgreSQL schema that holds every table of the
example (the app's, the outbox and Django's migration records); the tests give each run
its own. The schema must exist; ``public`` (the default) always does.
"""

import os
import re

SCHEMA = os.environ.get("DJANGO_OUTBOX_SCHEMA", "public")
if not re.fullmatch(r"[a-z_][a-z0-9_]*", SCHEMA):
    raise ValueError(f"DJANGO_OUTBOX_SCHEMA={SCHEMA!r} is not a plain schema name")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "outbox_site.urls"
INSTALLED_APPS = ["chat"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3
        "NAME": "test",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "OPTIONS": {"options": f"-c search_path={SCHEMA}"},
    }
}

# The outbox table (Centrifugo's schema) and the LISTEN/NOTIFY channel that wakes the
# consumer up; the migration chat/0001 creates both.
OUTBOX_TABLE = f"{SCHEMA}.chat_outbox"
OUTBOX_CHANNEL = f"{SCHEMA}_chat_outbox"

# The centrifuge-asgi node that outbox_site/asgi.py runs next to Django: anonymous
# clients may subscribe to chat:*, and the postgresql consumer publishes the outbox rows.
CENTRIFUGE = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            }
        ]
    },
    "consumers": [
        {
            "name": "outbox",
            "enabled": True,
            "type": "postgresql",
            "postgresql": {
                "dsn": "postgresql://postgres@127.0.0.1:5432/test",
                "outbox_table_name": OUTBOX_TABLE,
                "partition_notification_channel": OUTBOX_CHANNEL,
            },
        }
    ],
}
