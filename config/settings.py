"""Parley settings: everything comes from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.embedded import embedded_database, local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PARLEY_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or local_secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "core",
    "tenants",
    "agents",
    "conversations",
    "files",
    "dataframes",
    "turns",
]

# Django's own middleware (the admin needs sessions, auth, messages and CSRF), WhiteNoise's static files with
# an async path, and the refusal of NUL characters (core/middleware.py).
MIDDLEWARE = [
    "core.middleware.api_requests_see_nothing",  # first: row-level security from the request's start
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.AsyncWhiteNoiseMiddleware",
    "core.middleware.nul_characters_refused",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# CORS for browser clients on other origins (django-cors-headers), off unless origins are listed: then on
# the API's paths only, with the headers a client of the API sends and reads. The middleware is added only
# then (each middleware costs every request a step).
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
if CORS_ALLOWED_ORIGINS:
    INSTALLED_APPS.append("corsheaders")
    MIDDLEWARE.insert(0, "corsheaders.middleware.CorsMiddleware")
CORS_URLS_REGEX = r"^/(tenants/|v1/)"
# Origins (scheme://host[:port], or hosts as in ALLOWED_HOSTS) whose browser pages may open the WebSocket
# API; a handshake without an Origin (a server client) is not a browser's. Default: ALLOWED_HOSTS.
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", "") or ALLOWED_HOSTS
# How often an open WebSocket checks that its key is still live and its tenant active (else it closes).
WS_KEY_CHECK_SECONDS = env_float("WS_KEY_CHECK_SECONDS", 5.0)
# A WebSocket ticket (POST .../ws-tickets) opens one socket within this many seconds.
WS_TICKET_SECONDS = env_float("WS_TICKET_SECONDS", 60.0)
# A WebSocket client that takes no frame for this many seconds while the server has some to send (its
# socket's buffer full) is disconnected, rather than letting what waits for it grow.
WS_SEND_TIMEOUT_SECONDS = env_float("WS_SEND_TIMEOUT_SECONDS", 10.0)
CORS_ALLOW_HEADERS = ("accept", "authorization", "content-type", "idempotency-key", "last-event-id")
CORS_EXPOSE_HEADERS = ("retry-after", "content-disposition")
CORS_PREFLIGHT_MAX_AGE = 3600

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Data stores -------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
else:
    DATABASES = {"default": embedded_database(VAR_DIR / "pgdata")}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A psycopg connection pool per process bounds PostgreSQL connections under load (streams and waiting
# posts give their connection back while they wait); 0 disables it.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 0)
if DB_POOL_MAX_SIZE:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env_float("DB_POOL_TIMEOUT_SECONDS", 10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The role a tenant's requests run as (SET ROLE from the login role, per statement or transaction):
# row-level security shows it only that tenant's rows (core/tenancy.py). `migrate` creates it if
# missing (NOLOGIN) and grants it the tenant-owned tables; it must not be a superuser or BYPASSRLS.
DATABASE_APP_ROLE = env_str("DATABASE_APP_ROLE", "parley_app")

REDIS_URL = env_str("REDIS_URL")
# Threads per server process for requests' sync code (auth, views, ORM); generations use the event
# loop's own worker pool. Also the most PostgreSQL connections requests hold at once.
REQUEST_SYNC_THREADS = env_int("REQUEST_SYNC_THREADS", 16)
# Each stream reader blocks on one Redis connection while it waits for events.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 2000)
# How long the stream log waits for Redis to connect or answer (a blocking read: this beyond its own
# wait) before the command fails.
REDIS_TIMEOUT_SECONDS = env_float("REDIS_TIMEOUT_SECONDS", 5.0)
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Static and uploaded files -----------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request when it is missing
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Files (uploads, storage, extraction) -----------------------------------------------------

# Filesystem storage under MEDIA_ROOT by default; any S3-compatible store when S3_BUCKET is set.
S3_BUCKET = env_str("S3_BUCKET")
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("S3_REGION") or None,
            "addressing_style": env_str("S3_ADDRESSING_STYLE") or None,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "querystring_expire": 900,
        },
    }
# Uploads go to a temporary file past this size (and request bodies spool to disk), never whole into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024)
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None
FILE_MAX_BYTES = env_int("FILE_MAX_BYTES", 50 * 1024 * 1024)
FILE_MAX_PER_REQUEST = env_int("FILE_MAX_PER_REQUEST", 20)
# Total stored bytes per tenant; a tenant's own `max_upload_bytes` overrides it.
TENANT_MAX_UPLOAD_BYTES = env_int("TENANT_MAX_UPLOAD_BYTES", 10 * 1024 * 1024 * 1024)
# Text extraction is bounded: documents are untrusted input.
FILE_EXTRACT_MAX_PAGES = env_int("FILE_EXTRACT_MAX_PAGES", 500)
FILE_EXTRACT_MAX_CHARS = env_int("FILE_EXTRACT_MAX_CHARS", 2_000_000)
FILE_EXTRACT_SECONDS = env_float("FILE_EXTRACT_SECONDS", 20.0)
FILE_EXTRACT_MEMORY_MB = env_int("FILE_EXTRACT_MEMORY_MB", 1024)  # address space of the PDF/DOCX parser process
FILE_PREVIEW_URL_SECONDS = 15 * 60
# --- End of Files ------------------------------------------------------------------------------

# --- Security (production values come from the environment; see README "Deployment") ------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# The database's sessions, read and written as the tables' owner in any tenant scope (core/sessions.py).
SESSION_ENGINE = "core.sessions"
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The JSON API never needs a request body larger than this; uploads are streamed to storage.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- API ---------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # The key; or a staff user's admin session with the CSRF token, as the playground page calls the API.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "tenants.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.IsTenantMember"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttles.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "UNAUTHENTICATED_TOKEN": None,
    # The answer's type follows Accept (a stream: text/event-stream), not a `?format=` query parameter.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": "Multi-tenant backend for conversational AI agents. Every error has the shape "
    '`{"error": {"code", "message", "details"}}`; every list is `{"items": [...], "next": cursor}`.',
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_AUTHENTICATION": [],
    # API clients use keys; the staff session is the admin playground's, not documented as a way in.
    "AUTHENTICATION_WHITELIST": ["tenants.authentication.ApiKeyAuthentication"],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The areas of the API, in the order the documentation shows them (core.schema tags each operation).
    "TAGS": [
        {
            "name": "agents",
            "description": "An agent: its instructions, engine and options; its conversations.",
        },
        {"name": "conversations", "description": "A conversation of an agent: its messages as a tree, its title."},
        {
            "name": "messages and streams",
            "description": "Posting a message and getting the reply, waited for or streamed (Server-Sent Events); "
            "joining, resuming and cancelling a reply; feedback.",
        },
        {
            "name": "tools",
            "description": "The tenant's own HTTP tools and MCP servers, whose tools its agents call by naming "
            "them in `options.tools`.",
        },
        {
            "name": "usage and feedback",
            "description": "What the tenant used (turns and tokens by day, agent or model), and the feedback its "
            "users gave, for a team that reviews answers.",
        },
        {"name": "files", "description": "A conversation's files, their extracted passages, what replies cite."},
        {"name": "data frames", "description": "A conversation's tables, made by the SQL an agent runs in a reply."},
        {"name": "management", "description": "The tenant's conversations across agents: list, search, delete many."},
        {"name": "stateless v1", "description": "One request, one answer: the history comes with each request."},
        {"name": "WebSocket", "description": "Tickets for browsers' WebSocket handshakes (README: the protocol)."},
        {"name": "operations", "description": "For load balancers and operators."},
    ],
    # /healthz is a plain Django view (no key, no DRF): described here.
    "APPEND_PATHS": {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Is this server process serving?",
                "description": "For load balancers and orchestrators, without a key: 200 while the process "
                "serves and reaches its database; 503 while it drains (it got SIGTERM: send it no more work) "
                "or cannot reach the database.",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    code: {
                        "description": description,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string", "enum": ["ok", "draining", "unavailable"]},
                                        "database": {"type": "string", "enum": ["ok", "unreachable", "unchecked"]},
                                    },
                                    "required": ["status", "database"],
                                },
                                "examples": {
                                    name: {"value": {"status": status, "database": database}}
                                    for name, status, database in examples
                                },
                            }
                        },
                    }
                    for code, description, examples in [
                        ("200", "Serving.", [("Serving", "ok", "ok")]),
                        (
                            "503",
                            "Draining, or the database is unreachable.",
                            [("Draining", "draining", "unchecked"), ("NoDatabase", "unavailable", "unreachable")],
                        ),
                    ]
                },
            }
        }
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.schema.close_objects"],
    # One name per choice set (the generator warns, and names one Role2e2Enum, when two share a field name).
    "ENUM_NAME_OVERRIDES": {
        "MessageRoleEnum": "conversations.models.Role",
        "MessageStatusEnum": "conversations.models.MessageStatus",
        "StreamEndStatusEnum": ["completed", "cancelled"],
        "ToolCallStatusEnum": "conversations.models.ToolCallStatus",
        "WebhookEventEnum": "tenants.models.WebhookEvent",
    },
}

# Requests per API key; a tenant's own `requests_per_minute` overrides it.
THROTTLE_RATE = env_str("THROTTLE_RATE", "600/min")

# --- Parley limits and engines -----------------------------------------------------------------

MESSAGE_MAX_CHARS = env_int("MESSAGE_MAX_CHARS", 100_000)
CONVERSATION_MESSAGES_LIMIT_MAX = 1000

HISTORY_TOKENS_DEFAULT = env_int("HISTORY_TOKENS_DEFAULT", 8000)
# The stateless /v1/conversation API: the largest history (messages and system prompt, as JSON) accepted.
STATELESS_MAX_BYTES = env_int("STATELESS_MAX_BYTES", 1024 * 1024)
# The largest conversation document POST .../conversations/import takes (its files' and frames' bytes
# included, as base64); an export whose bytes would make a larger document answers 413.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 64 * 1024 * 1024)
# How much of attached files' extracted text an LLM engine gets in its prompt on /v1/conversation.
STATELESS_FILE_CONTEXT_CHARS = env_int("STATELESS_FILE_CONTEXT_CHARS", 20_000)

# Generations: partial content is flushed at least this often; a running message whose heartbeat is
# older than GENERATION_STALE_SECONDS belongs to a dead process, and another takes it over (continues it,
# or fails it when its agent says `on_crash: "fail"`); silent replies get a heartbeat every quarter of it,
# and every process sweeps every quarter of it. On SIGTERM a process lets its replies run for up to
# DRAIN_SECONDS, then hands the rest over (the server's graceful-shutdown timeout must be longer).
GENERATION_FLUSH_SECONDS = env_float("GENERATION_FLUSH_SECONDS", 1.0)
GENERATION_STALE_SECONDS = env_int("GENERATION_STALE_SECONDS", 10)
DRAIN_SECONDS = env_float("DRAIN_SECONDS", 60.0)
STREAM_KEEPALIVE_SECONDS = env_float("STREAM_KEEPALIVE_SECONDS", 15.0)
STREAM_LOG_TTL_SECONDS = env_int("STREAM_LOG_TTL_SECONDS", 300)
IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24)
# A retry that arrives while the first request still runs waits this long for its result, then gets 409.
IDEMPOTENCY_WAIT_SECONDS = env_float("IDEMPOTENCY_WAIT_SECONDS", 30.0)

OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
DEFAULT_MODEL = env_str("DEFAULT_MODEL")
# The models tenants' agents may use (comma-separated); empty allows any the server offers.
OPENAI_MODELS = env_list("OPENAI_MODELS", "")
OPENAI_TIMEOUT_SECONDS = env_float("OPENAI_TIMEOUT_SECONDS", 60.0)
OPENAI_MAX_RETRIES = env_int("OPENAI_MAX_RETRIES", 0)
TOOL_ROUNDS_MAX = env_int("TOOL_ROUNDS_MAX", 5)
# A tool call that takes longer, or answers more characters, gives the model an error (or the cut result)
# and the reply goes on.
TOOL_TIMEOUT_SECONDS = env_float("TOOL_TIMEOUT_SECONDS", 30.0)
# Webhooks: each delivery is tried until it is delivered or WEBHOOK_RETRY_HOURS after its event, with
# exponential backoff; an endpoint gets at most WEBHOOK_MAX_IN_FLIGHT at a time, in the events' order.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0)
WEBHOOK_RETRY_HOURS = env_float("WEBHOOK_RETRY_HOURS", 24.0)
WEBHOOK_MAX_IN_FLIGHT = env_int("WEBHOOK_MAX_IN_FLIGHT", 4)
WEBHOOK_POLL_SECONDS = env_float("WEBHOOK_POLL_SECONDS", 1.0)
WEBHOOK_BACKOFF_SECONDS = env_float("WEBHOOK_BACKOFF_SECONDS", 5.0)  # the first retry's wait; doubled each time
WEBHOOK_KEEP_DAYS = env_int("WEBHOOK_KEEP_DAYS", 7)  # ended deliveries are listed this long, then deleted
TOOL_RESULT_MAX_CHARS = env_int("TOOL_RESULT_MAX_CHARS", 20_000)
# Networks (CIDR, comma-separated) tenants' tools and MCP servers may reach besides public addresses, plain
# HTTP included: none by default, so that none reaches loopback, link-local or private addresses
# (agents/outbound.py).
TOOL_ALLOWED_NETWORKS = env_list("TOOL_ALLOWED_NETWORKS", "")
# A PEM file of certificate authorities trusted besides the public ones (certifi's) for those requests: for
# tools inside TOOL_ALLOWED_NETWORKS whose certificates a private authority signs.
TOOL_CA_BUNDLE = env_str("TOOL_CA_BUNDLE", "")
# How often each process deletes conversations past their agent's or tenant's retention_days (a few
# batches at a time; `manage.py purge_expired` does all at once).
RETENTION_PURGE_SECONDS = env_float("RETENTION_PURGE_SECONDS", 300.0)
# How long a process keeps the list of an MCP server's tools before listing them again (agents/mcp_tools.py).
MCP_TOOLS_CACHE_SECONDS = env_float("MCP_TOOLS_CACHE_SECONDS", 60.0)

# --- Data frames (dataframes/) -----------------------------------------------------------------
# SQL over a conversation's data runs in an in-process DuckDB that sees only the registered frames and
# files, refuses anything but one SELECT/WITH, and is bounded by these limits.
DATAFRAMES_SQL_TIMEOUT_SECONDS = env_float("DATAFRAMES_SQL_TIMEOUT_SECONDS", 10.0)
DATAFRAMES_SQL_MEMORY_LIMIT = env_str("DATAFRAMES_SQL_MEMORY_LIMIT", "512MB")
DATAFRAMES_SQL_THREADS = env_int("DATAFRAMES_SQL_THREADS", 2)
DATAFRAMES_SQL_MAX_ROWS = env_int("DATAFRAMES_SQL_MAX_ROWS", 1_000_000)
DATAFRAMES_SQL_MAX_BYTES = env_int("DATAFRAMES_SQL_MAX_BYTES", 256 * 1024 * 1024)  # a result's Arrow size
# Parquet "bombs": a footer declaring more cells (rows x columns) than this is refused before decoding;
# the same cap bounds the cells read from an XLSX sheet.
DATAFRAMES_MAX_CELLS = env_int("DATAFRAMES_MAX_CELLS", 100_000_000)
DATAFRAMES_XLSX_MAX_BYTES = env_int("DATAFRAMES_XLSX_MAX_BYTES", 128 * 1024 * 1024)  # a workbook's parts, unzipped
# Largest stored object copied to a local temporary file when the storage has no local path (S3).
DATAFRAMES_MAX_FILE_BYTES = env_int("DATAFRAMES_MAX_FILE_BYTES", 1024 * 1024 * 1024)
DATAFRAMES_ROW_GROUP_SIZE = env_int("DATAFRAMES_ROW_GROUP_SIZE", 64 * 1024)
DATAFRAMES_PAGE_MAX_ROWS = 10_000
DATAFRAMES_SAMPLES_MAX = 100
# --- end of Data frames ------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
