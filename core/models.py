from django.db import models
from django.utils import timezone


class TenantQuerySet(models.QuerySet):
    def for_tenant(self, tenant) -> "TenantQuerySet":
        return self.filter(tenant=tenant)


class TenantOwned(models.Model):
    """Base of every tenant-owned row: `tenant_id` leads its indexes so tables can be distributed by tenant."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True
