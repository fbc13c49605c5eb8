from chat import views
from django.urls import path

urlpatterns = [
    path("messages", views.messages),
    path("messages/rejected", views.post_rejected_message),
]
