from django.urls import path

from dataframes.apis import DataFrameViewSet

CONVERSATION = "agents/<str:agent_id>/conversations/<str:conversation_id>"

urlpatterns = [
    path(f"{CONVERSATION}/data-frames", DataFrameViewSet.as_view({"get": "list"}), name="dataframe-list"),
    path(
        f"{CONVERSATION}/data-frames/<str:data_frame_name>",
        DataFrameViewSet.as_view({"get": "retrieve"}),
        name="dataframe-detail",
    ),
]
