from datetime import date

from django.db.models import Sum

from tenants.models import DailyUsage, Tenant

USAGE_GROUPS = {"day": ("day",), "agent": ("agent_id",), "model": ("engine", "model")}


def usage_report(*, tenant: Tenant, since: date, until: date, group_by: str) -> list[dict]:
    """The tenant's recorded usage from `since` to `until` (both included, UTC days), summed by day, by
    agent (its id: a deleted agent's usage stays) or by engine and model, in that order."""
    keys = USAGE_GROUPS[group_by]
    rows = (
        DailyUsage.objects.filter(tenant=tenant, day__gte=since, day__lte=until)
        .values(*keys)
        .annotate(turns=Sum("requests"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"))
        .order_by(*keys)
    )
    return list(rows)
