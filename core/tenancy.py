"""The second wall between tenants: PostgreSQL row-level security.

Every tenant-owned table (a model with a `tenant` foreign key, and the tenants table itself) has a policy
that shows the application role (settings.DATABASE_APP_ROLE, which owns nothing and cannot bypass it) only
the rows of the tenant named by the `parley.tenant_id` setting: a query that forgot its tenant filter
returns nothing of another tenant's, and an insert for another tenant is refused.

Which role and tenant a statement runs as is the *scope* of the code that runs it, a context variable:
- a request to the API starts as the application role with no tenant (""), seeing nothing; authentication
  (an API key, a signed URL) scopes it to its tenant (`tenant_scope_enter`); its threads inherit that
  scope, and the tasks that outlive it (a generation, an idempotent turn) are given it (`scoped_context`);
- code with no scope (None) runs as the login role, the tables' owner, which the policies do not restrict:
  migrations, the admin, management commands, and maintenance, which says so with `owner_scope()`
  (finding another process's dead replies, storing the progress of every running reply, finding whose an
  API key is when the URL does not name its tenant).

One execute wrapper, installed on every connection, makes the connection's role and setting match the
scope before each statement: for the session when no transaction is open (only when they differ from
what it last set), for the transaction (`set_config(..., true)`, that is SET LOCAL) inside one, so that
a rollback can never leave a connection, or a pooled connection its next user, in another tenant's scope.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.signals import connection_created
from django.db.models import ForeignKey
from psycopg.pq import TransactionStatus

TENANT_SETTING = "parley.tenant_id"
POLICY = "tenant_isolation"

_scope: ContextVar[str | None] = ContextVar("tenant_scope", default=None)


def tenant_scope_enter(tenant_id: str) -> None:
    """Scope the rest of this context (a request, and what it starts) to the tenant."""
    _scope.set(tenant_id)


def owner_scope_enter() -> None:
    """The rest of this context runs as the owner, across tenants (the scope of no request)."""
    _scope.set(None)


def scoped_context(tenant_id: str | None) -> contextvars.Context:
    """A fresh context, nothing of the caller's in it but the scope: for a task that outlives the request
    that starts it (a generation, an idempotent turn), or that serves every tenant (None: the owner)."""
    context = contextvars.Context()
    context.run(_scope.set, tenant_id)
    return context


def current_scope() -> str | None:
    return _scope.get()


@contextmanager
def tenant_scope(tenant_id: str) -> Iterator[None]:
    token = _scope.set(tenant_id)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def owner_scope() -> Iterator[None]:
    """Run as the tables' owner, across tenants: only for work that belongs to no tenant's request."""
    token = _scope.set(None)
    try:
        yield
    finally:
        _scope.reset(token)


# --- The execute wrapper ------------------------------------------------------------------------

_UNKNOWN = object()


@dataclass
class _ConnectionScope:
    session: object = _UNKNOWN  # the scope the session was last set to (committed, so certain)
    local: bool = False  # a transaction-local setting may be in force: set it for every statement


# By PostgreSQL connection (psycopg's, which a pool hands from request to request), not by Django's
# per-thread wrapper: a connection taken from the pool in the scope its last user left needs no setting.
_connection_scopes: WeakKeyDictionary = WeakKeyDictionary()

_SET_SCOPE = f"SELECT set_config('role', %s, %s), set_config('{TENANT_SETTING}', %s, %s)"


def _scoped_execute(execute, sql, params, many, context):
    connection = context["connection"]
    wanted = _scope.get()
    state = _connection_scopes.setdefault(connection.connection, _ConnectionScope())
    if connection.connection.info.transaction_status == TransactionStatus.INERROR:
        pass  # only a rollback can run (which may undo a local setting: `local` stays true)
    elif connection.in_atomic_block or not connection.get_autocommit():
        if state.local or state.session != wanted:
            _set_scope(connection, wanted, local=True)
            state.local = True
    else:  # autocommit: what was set for the transaction has gone with it
        state.local = False
        if state.session != wanted:
            _set_scope(connection, wanted, local=False)
            state.session = wanted
    return execute(sql, params, many, context)


def _set_scope(connection, tenant_id: str | None, *, local: bool) -> None:
    role = "none" if tenant_id is None else settings.DATABASE_APP_ROLE
    with connection.wrap_database_errors:  # raised as Django's errors, as the statement's own would be
        connection.connection.execute(_SET_SCOPE, [role, local, tenant_id or "", local])


def _scope_new_connection(sender, connection, **kwargs) -> None:
    if connection.alias != DEFAULT_DB_ALIAS or connection.vendor != "postgresql":
        return
    if _scoped_execute not in connection.execute_wrappers:
        connection.execute_wrappers.append(_scoped_execute)


# A request to the API sees no tenant's rows until authentication (an API key, a signed URL) names its
# tenant (core.middleware.api_requests_see_nothing); other requests (the admin, /healthz) run as the owner.
API_PATHS = ("/tenants/", "/v1/")


def request_scope_enter(path: str) -> None:
    _scope.set("" if path.startswith(API_PATHS) else None)


def _request_finished(sender, **kwargs) -> None:
    # A server gives each request a context of its own; a test client runs it in the test's.
    _scope.set(None)


def scoping_install() -> None:
    connection_created.connect(_scope_new_connection, dispatch_uid="core.tenancy.scope")
    request_finished.connect(_request_finished, dispatch_uid="core.tenancy.request_finished")


# --- The policies --------------------------------------------------------------------------------


def tenant_tables() -> list[tuple[str, str, str]]:
    """(table, the column naming its tenant, the application role's privileges) of every tenant-owned
    model, and of the tenants table, which a request reads and locks but never adds to or deletes from."""
    tables, tenant_models = [], set()
    for model in apps.get_models():
        field = next((f for f in model._meta.concrete_fields if f.name == "tenant"), None)
        if isinstance(field, ForeignKey) and not model._meta.proxy:
            tables.append((model._meta.db_table, field.column, "SELECT, INSERT, UPDATE, DELETE"))
            tenant_models.add(field.related_model)
    tables += [(model._meta.db_table, model._meta.pk.column, "SELECT, UPDATE") for model in tenant_models]
    return sorted(tables)


def row_security_install(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """Create the application role if missing, and give it each tenant-owned table behind its policy.

    Run after every `migrate` (post_migrate), by the owner: idempotent, and a new tenant-owned model
    gets its policy with the migration that creates its table."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    role = settings.DATABASE_APP_ROLE
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"CREATE ROLE {quote(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS")
        elif row[0]:
            raise ImproperlyConfigured(
                f"DATABASE_APP_ROLE {role!r} is a superuser or bypasses row-level security: use a role that does not."
            )
        # To SET ROLE to it. PostgreSQL 16 separates that right (SET) from membership, and gives a role's
        # non-superuser creator only ADMIN on it.
        pg16 = connection.pg_version >= 160000
        cursor.execute(
            f"SELECT pg_has_role(current_user, %s, '{'SET' if pg16 else 'MEMBER'}'), current_schema()", [role]
        )
        may_set_role, schema = cursor.fetchone()
        if not may_set_role:
            cursor.execute(f"GRANT {quote(role)} TO CURRENT_USER{' WITH SET TRUE' if pg16 else ''}")
        cursor.execute(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quote(role)}")
        for table, column, privileges in tenant_tables():
            mine = f"{quote(column)} = current_setting('{TENANT_SETTING}', true)"
            cursor.execute(f"ALTER TABLE {quote(table)} ENABLE ROW LEVEL SECURITY")
            cursor.execute(f"DROP POLICY IF EXISTS {POLICY} ON {quote(table)}")
            cursor.execute(
                f"CREATE POLICY {POLICY} ON {quote(table)} TO {quote(role)} USING ({mine}) WITH CHECK ({mine})"
            )
            cursor.execute(f"GRANT {privileges} ON {quote(table)} TO {quote(role)}")
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
            if (sequence := cursor.fetchone()[0]) is not None:
                cursor.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {quote(role)}")
