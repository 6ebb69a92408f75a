"""Django's deploy checks, run as if core.middleware's subclasses were Django's own middleware.

Django finds its security, CSRF and clickjacking middleware by their dotted paths. Parley installs
subclasses of them (core.middleware, so that their hooks run on the event loop), which those checks would
report missing (security.W001-W003, silenced in settings) while skipping every check that depends on
them: HSTS, the SSL redirect, the CSRF cookie. Here those checks run with Django's paths in their place.
"""

from django.conf import settings
from django.core import checks
from django.core.checks.security import base, csrf

DJANGO_PATHS = {
    "core.middleware.SecurityMiddleware": "django.middleware.security.SecurityMiddleware",
    "core.middleware.CsrfViewMiddleware": "django.middleware.csrf.CsrfViewMiddleware",
    "core.middleware.XFrameOptionsMiddleware": "django.middleware.clickjacking.XFrameOptionsMiddleware",
}
MIDDLEWARE_DEPENDENT_CHECKS = [
    base.check_sts,
    base.check_sts_include_subdomains,
    base.check_sts_preload,
    base.check_content_type_nosniff,
    base.check_ssl_redirect,
    base.check_xframe_deny,
    base.check_referrer_policy,
    base.check_cross_origin_opener_policy,
    csrf.check_csrf_cookie_secure,
]


@checks.register(checks.Tags.security, deploy=True)
def check_security_middleware(app_configs, **kwargs) -> list[checks.CheckMessage]:
    from django.test.utils import override_settings  # here: only `check` needs it, not every server process

    missing = [
        checks.Warning(f"{path} is not in MIDDLEWARE.", id="core.W001")
        for path in DJANGO_PATHS
        if path not in settings.MIDDLEWARE and DJANGO_PATHS[path] not in settings.MIDDLEWARE
    ]
    with override_settings(MIDDLEWARE=[DJANGO_PATHS.get(path, path) for path in settings.MIDDLEWARE]):
        return missing + [message for check in MIDDLEWARE_DEPENDENT_CHECKS for message in check(app_configs)]
