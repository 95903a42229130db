from audit_middleware import Actor


def load_token(secret):
    from .models import ApiToken

    token = ApiToken.objects.filter(secret=secret).first()
    if token is None:
        return None
    return Actor.token(f"tok_{token.pk}", token.label, secret=secret)


def workspace_of(request):
    from .models import Membership

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return request.META.get("HTTP_X_WORKSPACE")  # token callers name their workspace
    membership = Membership.objects.filter(user_id=user.pk).first()
    return membership.workspace_id if membership else None
