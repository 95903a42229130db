from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/audit-trail/", include("audit_middleware.adapters.django.urls")),  # the admin view
    path("api/warehouses/<int:pk>/<str:action>", views.api_warehouse, name="api_warehouse"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("", views.home, name="home"),
    path("<str:kind>/", views.create, name="create"),
    path("<str:kind>/<int:pk>/<str:action>", views.act, name="act"),
]
