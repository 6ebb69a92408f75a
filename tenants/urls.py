from django.urls import path

from tenants.apis import UsageView

urlpatterns = [
    path("usage", UsageView.as_view(), name="usage"),
]
