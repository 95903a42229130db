import json

from django.db import transaction
from django.http import JsonResponse
from django.utils.functional import empty
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Warehouse


@csrf_exempt
def create_warehouse(request):
    warehouse = Warehouse.objects.create(name=request.POST["name"])
    return JsonResponse({"id": warehouse.pk})


@csrf_exempt
def disable_warehouse(request, pk):
    warehouse = Warehouse.objects.get(pk=pk)
    warehouse.enabled = False
    warehouse.save()
    return JsonResponse({"ok": True})


@csrf_exempt
def failing_update(request, pk):
    try:
        with transaction.atomic():
            warehouse = Warehouse.objects.get(pk=pk)
            warehouse.name = "never saved"
            warehouse.save()
            raise RuntimeError("payment provider down")
    except RuntimeError:
        return JsonResponse({"ok": False}, status=502)


def user_probe(request):
    """Reports whether request.user was still an unevaluated lazy object when the view started."""
    user = request.__dict__.get("user")
    lazy = getattr(user, "_wrapped", None) is empty
    return JsonResponse({"lazy_when_view_started": lazy})


class RenameWarehouse(APIView):
    def post(self, request, pk):
        warehouse = Warehouse.objects.get(pk=pk)
        warehouse.name = request.data["name"]
        warehouse.save()
        return Response({"ok": True})


async def async_create(request):
    name = json.loads(request.body)["name"]
    warehouse = await Warehouse.objects.acreate(name=name)
    warehouse.capacity = 5
    await warehouse.asave()
    return JsonResponse({"id": warehouse.pk})


async_create.csrf_exempt = True  # Django 4.2's csrf_exempt decorator does not keep a view async


@csrf_exempt
def create_many(request):
    """Creates three warehouses, then fails when asked to (after the saves)."""
    for n in range(3):
        Warehouse.objects.create(name=f"{request.POST['name']} {n}")
    if request.POST.get("explode"):
        raise RuntimeError("after the saves")
    return JsonResponse({"ok": True})
