from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/audit-trail/", include("audit_middleware.adapters.django.urls")),
    path("admin/", admin.site.urls),
    path("warehouses/", views.create_warehouse),
    path("warehouses/<int:pk>/disable", views.disable_warehouse),
    path("warehouses/<int:pk>/fail", views.failing_update),
    path("probe/user", views.user_probe),
    path("warehouses/many", views.create_many),
    path("api/warehouses/<int:pk>/rename", views.RenameWarehouse.as_view()),
    path("async/warehouses/", views.async_create),
]
