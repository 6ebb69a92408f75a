"""The admin's sessions, in the database, read and written as the tables' owner whatever the request's
tenant scope (core.tenancy): a session is no tenant's row, and the tenant's role has no grant on it. A
staff session authenticates the playground's API requests (tenants.authentication), which run in a tenant's
scope; Django may renew such a session in that request (a SECRET_KEY_FALLBACKS rotation) and saves it as the
response leaves. SESSION_ENGINE = "core.sessions"."""

from django.contrib.sessions.backends import db

from core.tenancy import owner_scope


class SessionStore(db.SessionStore):
    def load(self):
        with owner_scope():
            return super().load()

    async def aload(self):
        with owner_scope():
            return await super().aload()

    def exists(self, session_key):
        with owner_scope():
            return super().exists(session_key)

    async def aexists(self, session_key):
        with owner_scope():
            return await super().aexists(session_key)

    def create(self):
        with owner_scope():
            return super().create()

    async def acreate(self):
        with owner_scope():
            return await super().acreate()

    def save(self, must_create=False):
        with owner_scope():
            return super().save(must_create)

    async def asave(self, must_create=False):
        with owner_scope():
            return await super().asave(must_create)

    def delete(self, session_key=None):
        with owner_scope():
            return super().delete(session_key)

    async def adelete(self, session_key=None):
        with owner_scope():
            return await super().adelete(session_key)
