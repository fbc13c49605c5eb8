"""Each message is saved and published in one transaction: the outbox row is written by
Django's own connection inside ``transaction.atomic()``, so it commits or rolls back with
the message, and the consumer publishes only what committed."""

import json

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from centrifuge_asgi.consumers import outbox_table

from .models import Message


class Rejected(Exception):
    """Raised after both writes: the transaction rolls back."""


def save_and_publish(text: str) -> dict[str, object]:
    """The message row and its publication into ``chat:lobby`` (inside the caller's
    transaction)."""
    message = Message.objects.create(text=text)
    data = {"id": message.id, "text": message.text}
    with connection.cursor() as cursor:
        outbox_table.publish_sync(cursor, "chat:lobby", data, table=settings.OUTBOX_TABLE)
    return data


@csrf_exempt
@require_http_methods(["GET", "POST"])
def messages(request: HttpRequest) -> HttpResponse:
    """POST ``{"text": ...}`` saves and publishes a message; GET lists the saved ones."""
    if request.method == "GET":
        rows = list(Message.objects.order_by("id").values("id", "text"))
        return JsonResponse({"messages": rows})
    text = json.loads(request.body)["text"]
    with transaction.atomic():
        data = save_and_publish(text)
    return JsonResponse(data)


@csrf_exempt
@require_http_methods(["POST"])
def post_rejected_message(request: HttpRequest) -> HttpResponse:
    """Writes both rows like ``messages``, then fails before the commit: nothing is saved
    and nothing is published."""
    text = json.loads(request.body)["text"]
    try:
        with transaction.atomic():
            save_and_publish(text)
            raise Rejected("a check after the writes failed")
    except Rejected:
        return JsonResponse({"rejected": True}, status=409)
