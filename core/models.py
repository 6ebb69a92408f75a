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


class IdempotencyKey(TenantOwned):
    """A client's Idempotency-Key for a POST: the first response is kept 24 h and replayed for retries."""

    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty while running.")
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="While running, renewed by its process; a lapsed claim can be taken over."
    )
    # Text, not jsonb: a replay must be byte-identical, and jsonb reorders keys.
    response_body = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="idempotency_key_once_per_tenant")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_expiry")]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.key}"
