"""Django's command-line utility for the outbox example (``python manage.py migrate``)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "outbox_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
