"""Scale dataset for the benchmark: `python -m server generate-data`, or `generate()` from code.

Writes tenants of configurable sizes straight into `chat_sessions` / `chat_messages` with
PostgreSQL COPY (asyncpg), the way the services that own those tables write them. Rows are
generated lazily and streamed, so memory stays flat whatever the size; the same spec and seed
always produce the same rows (only the message ids, drawn from the table's sequence, differ).

Each tenant loads in one transaction: a tenant is either fully there or absent, which is what
lets a rerun skip tenants that already have sessions (or `replace` them).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from server.data.engine import asyncpg_dsn
from server.domain.status import format_end_time

Progress = Callable[[str], None]

SESSION_COLUMNS = (
    "tenant_id",
    "session_id",
    "channel_type",
    "metadata",
    "created_at",
    "updated_at",
)
MESSAGE_COLUMNS = ("tenant_id", "session_id", "role", "content", "metadata", "created_at")

# Fixed so that a seed alone decides every timestamp; benchmarks read it from the spec.
DEFAULT_REFERENCE_TIME = datetime(2026, 11, 1, tzinfo=UTC)

_CHANNELS: tuple[tuple[str | None, float], ...] = (
    ("web", 0.45),
    ("whatsapp", 0.25),
    ("email", 0.15),
    ("sms", 0.12),
    (None, 0.03),
)
_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP")
_ENTRY_POINTS = ("widget", "help-center", "checkout", "order-page", "api")
_MODELS = ("gpt-4o-mini", "gpt-4.1", "claude-sonnet", "llama-3.1-70b")
_SOURCES = ("help-center", "product-docs", "policies", "faq", "release-notes")
_VOCABULARY = (
    "order refund shipping account password invoice delivery tracking payment card subscription"
    " plan upgrade cancel return label warehouse courier address phone email verification code"
    " discount coupon price tax receipt warranty repair replacement device battery screen update"
    " install login error message support agent ticket escalation policy days business within"
    " please thanks hello could would should help need want check status available today tomorrow"
    " the a an to of and or for with on in at by from your my our this that it is was will can not"
)
_WORDS = tuple(_VOCABULARY.split())
_TOOLS: tuple[tuple[str, Callable[[random.Random], dict[str, Any]]], ...] = (
    ("lookup_order", lambda r: {"order_id": f"A-{r.randrange(100000, 999999)}"}),
    ("search_kb", lambda r: {"query": " ".join(r.choices(_WORDS, k=4)), "top_k": 5}),
    ("create_ticket", lambda r: {"priority": r.choice(("low", "normal", "high")), "queue": "T2"}),
    ("get_account", lambda r: {"customer_id": r.randrange(10_000, 9_999_999)}),
    ("check_refund_status", lambda r: {"refund_id": f"R-{r.randrange(10**6, 10**7)}"}),
    ("schedule_callback", lambda r: {"phone": f"+1555{r.randrange(10**6, 10**7)}", "slot": 3}),
)
_ERRORS = (
    ("LLM_TIMEOUT", "the model did not answer in 30s"),
    ("RATE_LIMITED", "upstream model rate limit exceeded; retried 3 times"),
    ("CONTEXT_TOO_LONG", "conversation exceeded the model context window"),
    ("TOOL_FAILURE", "a required tool call failed; answered without it"),
    ("CONTENT_FILTER", "the response was blocked by the content filter"),
)
_TOOL_ID_SLOT = "\x00id\x00"


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate. The big tenant gets `sessions` ordinary sessions plus `huge_sessions`
    more (ids `huge-0`, ...); set both to 0 to generate only small tenants."""

    sessions: int = 200_000
    messages_per_session: int = 20
    small_tenants: int = 100
    small_tenant_sessions: int = 200
    huge_sessions: int = 3
    huge_session_messages: int = 50_000
    tenant_prefix: str = "bench"
    # The big tenant's id; None means f"{tenant_prefix}-big".
    tenant: str | None = None
    seed: int = 1
    days: int = 90
    reference_time: datetime = DEFAULT_REFERENCE_TIME
    # Delete tenants that already have sessions and load them again (default: skip them).
    replace: bool = False

    def __post_init__(self) -> None:
        for name in (
            "sessions",
            "small_tenants",
            "small_tenant_sessions",
            "huge_sessions",
            "huge_session_messages",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.messages_per_session < 1:
            raise ValueError("messages_per_session must be >= 1")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.small_tenants > 1000:
            raise ValueError("small_tenants must be <= 1000 (ids have three digits)")
        if self.reference_time.tzinfo is None:
            raise ValueError("reference_time must be timezone-aware")

    @property
    def big_tenant(self) -> str:
        return self.tenant or f"{self.tenant_prefix}-big"

    def small_tenant(self, index: int) -> str:
        return f"{self.tenant_prefix}-small-{index:03d}"


@dataclass(frozen=True)
class TenantSummary:
    """One tenant's outcome; a skipped tenant already had sessions and was left as it was."""

    tenant_id: str
    sessions: int
    messages: int
    skipped: bool = False


@dataclass(frozen=True)
class DatasetSummary:
    """What `generate` wrote: rows of the tenants it loaded (skipped ones count zero)."""

    tenants: tuple[TenantSummary, ...] = field(default_factory=tuple)
    sessions: int = 0
    messages: int = 0
    seconds: float = 0.0


class _Plan(NamedTuple):
    """Everything about one session that both the session and the message rows depend on."""

    session_id: str
    created_at: datetime
    messages: int
    # Message i is written in [i * step_us, (i + 1) * step_us) after created_at: strictly
    # increasing, and all before created_at + messages * step_us.
    step_us: int
    channel_type: str | None
    metadata: str | None
    updated_at: datetime


@dataclass(frozen=True)
class _TenantShape:
    tenant_id: str
    sessions: int
    messages_per_session: int
    huge_sessions: int
    huge_session_messages: int

    @property
    def big(self) -> bool:
        """Whether loading takes long enough to deserve progress lines of its own."""
        return self.sessions >= 10_000 or self.huge_sessions > 0


class _Pools:
    """Pre-rendered JSON fragments and text, so the per-message work is slicing and joining."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:pools")
        self.corpus = " ".join(rng.choice(_WORDS) for _ in range(60_000))
        self.corpus_limit = len(self.corpus) - 400
        self.hits = [self._hit(rng) for _ in range(4096)]
        self.tools = [self._tool(rng) for _ in range(1024)]
        self.errors = [json.dumps({"code": code, "message": message}) for code, message in _ERRORS]
        self.models = [json.dumps(model) for model in _MODELS]

    def text(self, rng: random.Random, shortest: int, longest: int) -> str:
        start = int(rng.random() * self.corpus_limit)
        return self.corpus[start : start + shortest + int(rng.random() * (longest - shortest + 1))]

    def _hit(self, rng: random.Random) -> str:
        document = rng.randrange(1, 20_000)
        return json.dumps(
            {
                "source": rng.choice(_SOURCES),
                "document_id": f"doc-{document:05d}",
                "chunk_id": f"doc-{document:05d}#{rng.randrange(0, 40)}",
                "score": round(rng.uniform(0.35, 0.99), 4),
                "content": self.text(rng, 80, 240),
            }
        )

    def _tool(self, rng: random.Random) -> tuple[str, str]:
        """A tool call's JSON split around its id, which is unique per call."""
        name, arguments = rng.choice(_TOOLS)
        failed = rng.random() < 0.1
        call = {
            "id": _TOOL_ID_SLOT,
            "name": name,
            "arguments": arguments(rng),
            "result": None if failed else {"ok": True, "summary": self.text(rng, 20, 80)},
            "status": "error" if failed else "ok",
            "latency_ms": rng.randrange(15, 4000),
            "error": rng.choice(("timeout after 5000ms", "upstream returned 503"))
            if failed
            else None,
        }
        before, after = json.dumps(call).split(json.dumps(_TOOL_ID_SLOT))
        return before + '"', '"' + after


def _shapes(spec: DatasetSpec) -> list[_TenantShape]:
    shapes: list[_TenantShape] = []
    if spec.sessions or spec.huge_sessions:
        shapes.append(
            _TenantShape(
                spec.big_tenant,
                spec.sessions,
                spec.messages_per_session,
                spec.huge_sessions,
                spec.huge_session_messages,
            )
        )
    sizes = random.Random(f"{spec.seed}:small-sizes")
    for index in range(spec.small_tenants):
        # About small_tenant_sessions each (+-25%), so tenants are not all alike.
        spread = spec.small_tenant_sessions // 4
        count = spec.small_tenant_sessions + sizes.randint(-spread, spread)
        shapes.append(
            _TenantShape(spec.small_tenant(index), count, spec.messages_per_session, 0, 0)
        )
    return shapes


def _session_metadata(rng: random.Random, last_message: datetime) -> tuple[str | None, datetime]:
    """Stored metadata (JSON text) and updated_at: ~70% active (null, no status, or `active`),
    ~20% closed and ~10% expired, the last two with an endTime after the last message."""
    roll = rng.random()
    locale = _LOCALES[int(rng.random() * len(_LOCALES))]
    if roll < 0.25:
        return None, last_message
    if roll < 0.45:
        entry = _ENTRY_POINTS[int(rng.random() * len(_ENTRY_POINTS))]
        return json.dumps({"locale": locale, "entryPoint": entry}), last_message
    if roll < 0.70:
        return json.dumps({"status": "active", "locale": locale}), last_message
    if roll < 0.90:
        ended = last_message + timedelta(seconds=30 + int(rng.random() * 1800))
        closed: dict[str, Any] = {"status": "closed", "endTime": format_end_time(ended)}
        if rng.random() < 0.4:
            closed["csat"] = 1 + int(rng.random() * 5)
        closed["locale"] = locale
        return json.dumps(closed), ended
    ended = last_message + timedelta(minutes=30 + int(rng.random() * 1410))
    return json.dumps({"status": "expired", "endTime": format_end_time(ended)}), ended


def _channel(rng: random.Random) -> str | None:
    roll = rng.random()
    for channel, share in _CHANNELS:
        roll -= share
        if roll < 0:
            return channel
    return _CHANNELS[0][0]


def _plans(spec: DatasetSpec, shape: _TenantShape) -> Iterator[_Plan]:
    """The tenant's sessions in id order; rerunning yields exactly the same plans."""
    rng = random.Random(f"{spec.seed}:{shape.tenant_id}:sessions")
    span_us = spec.days * 86_400 * 1_000_000
    start = spec.reference_time - timedelta(microseconds=span_us)
    low = max(1, shape.messages_per_session // 2)
    width = shape.messages_per_session + shape.messages_per_session // 2 - low + 1
    total = shape.sessions
    slot_us = span_us / max(total, 1)
    for index in range(total):
        # One session per equal time slot: uniform over the span, and ids ascend with time the
        # way a sequential id generator's would, which keeps index inserts near the right edge.
        created = start + timedelta(microseconds=int((index + rng.random()) * slot_us))
        count = low + int(rng.random() * width)
        yield _plan(rng, f"s-{index:07d}", created, count, 2_000_000 + int(rng.random() * 88e6))
    for index in range(shape.huge_sessions):
        count = shape.huge_session_messages
        step_us = 1_000_000 + int(rng.random() * 9e6)
        # Days long: started early enough to end before the reference time when the span allows.
        latest = max(span_us - count * step_us, 0)
        created = start + timedelta(microseconds=int(rng.random() * latest))
        yield _plan(rng, f"huge-{index}", created, count, step_us)


def _plan(
    rng: random.Random, session_id: str, created: datetime, count: int, step_us: int
) -> _Plan:
    last = created + timedelta(microseconds=count * step_us)
    channel = _channel(rng)
    metadata, updated = _session_metadata(rng, last)
    return _Plan(session_id, created, count, step_us, channel, metadata, updated)


def _session_rows(
    tenant_id: str, plans: Iterator[_Plan], meter: _Meter
) -> Iterator[tuple[str, str, str | None, str | None, datetime, datetime]]:
    for plan in plans:
        meter.expected += plan.messages
        yield (
            tenant_id,
            plan.session_id,
            plan.channel_type,
            plan.metadata,
            plan.created_at,
            plan.updated_at,
        )


class _Meter:
    """Rows written so far, reported at most every few seconds."""

    def __init__(self, progress: Progress | None, label: str, expected: int) -> None:
        self.progress, self.label, self.expected = progress, label, expected
        self.rows = 0
        self.start()

    def start(self) -> None:
        """Rates count from now (after the sessions, for the messages)."""
        self.started = self.last_report = time.monotonic()

    def tick(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if self.progress is not None and now - self.last_report >= 5:
            self.last_report = now
            self.progress(self.line(now))

    def line(self, now: float) -> str:
        rate = self.rows / max(now - self.started, 1e-9)
        share = f" ({100 * self.rows / self.expected:.0f}%)" if self.expected else ""
        return f"{self.label}: {self.rows:,}/{self.expected:,} messages{share}, {rate:,.0f} rows/s"


def _message_rows(
    spec: DatasetSpec, shape: _TenantShape, pools: _Pools, meter: _Meter
) -> Iterator[tuple[str, str, str, str, str | None, datetime]]:
    """Messages of every planned session: user and assistant in turn, times increasing."""
    rng = random.Random(f"{spec.seed}:{shape.tenant_id}:messages")
    rnd = rng.random
    tenant_id = shape.tenant_id
    corpus, corpus_limit = pools.corpus, pools.corpus_limit
    hits, tools, errors, models = pools.hits, pools.tools, pools.errors, pools.models
    n_hits, n_tools, n_errors, n_models = len(hits), len(tools), len(errors), len(models)
    call_number = 0
    for plan in _plans(spec, shape):
        session_id, created, step = plan.session_id, plan.created_at, plan.step_us
        model = models[int(rnd() * n_models)]
        for i in range(plan.messages):
            at = created + timedelta(microseconds=i * step + int(rnd() * step))
            start = int(rnd() * corpus_limit)
            if i % 2 == 0:
                content = corpus[start : start + 50 + int(rnd() * 200)]
                yield (tenant_id, session_id, "user", content, None, at)
                continue
            content = corpus[start : start + 100 + int(rnd() * 301)]
            roll = rnd()
            metadata: str | None = None
            if roll >= 0.25:
                parts = ['"model":' + model]
                if roll < 0.85:
                    chosen = [hits[int(rnd() * n_hits)] for _ in range(1 + int(rnd() * 4))]
                    parts.append('"retrieval":[' + ",".join(chosen) + "]")
                if rnd() < 0.3:
                    calls = []
                    for _ in range(1 + (rnd() < 0.25)):
                        call_number += 1
                        before, after = tools[int(rnd() * n_tools)]
                        calls.append(f"{before}call_{call_number:08x}{after}")
                    parts.append('"tool_calls":[' + ",".join(calls) + "]")
                if rnd() < 0.04:
                    parts.append('"error":' + errors[int(rnd() * n_errors)])
                metadata = "{" + ",".join(parts) + "}"
            yield (tenant_id, session_id, "assistant", content, metadata, at)
        meter.tick(plan.messages)


async def generate(
    url: str, spec: DatasetSpec, *, progress: Progress | None = None
) -> DatasetSummary:
    """Load `spec` into the (already migrated) database at `url`; SQLAlchemy or asyncpg URL."""
    import asyncpg  # deferred: the CLI imports this module before it knows the command

    began = time.monotonic()
    pools = _Pools(spec.seed)
    summaries: list[TenantSummary] = []
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        shapes = _shapes(spec)
        for number, shape in enumerate(shapes, start=1):
            summaries.append(await _load_tenant(conn, spec, shape, pools, progress))
            # Big tenants report their own progress; small ones in tens.
            last = number == len(shapes)
            if progress is not None and not shape.big and (number % 10 == 0 or last):
                done = sum(s.messages for s in summaries)
                progress(f"{number}/{len(shapes)} tenants done, {done:,} messages so far")
    finally:
        await conn.close()
    return DatasetSummary(
        tenants=tuple(summaries),
        sessions=sum(s.sessions for s in summaries),
        messages=sum(s.messages for s in summaries),
        seconds=time.monotonic() - began,
    )


async def _load_tenant(
    conn: Any, spec: DatasetSpec, shape: _TenantShape, pools: _Pools, progress: Progress | None
) -> TenantSummary:
    tenant_id = shape.tenant_id
    async with conn.transaction():
        # Losing the last moments of a benchmark load to a crash is fine; waiting for every
        # WAL flush is not. Only this transaction is affected.
        await conn.execute("SET LOCAL synchronous_commit = off")
        # Two generators aimed at one tenant take turns, so the second sees the first's rows.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('datagen:' || $1))", tenant_id)
        existing = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM chat_sessions WHERE tenant_id = $1)", tenant_id
        )
        if existing:
            if not spec.replace:
                if progress is not None:
                    progress(f"{tenant_id}: already has sessions, skipped (use --replace)")
                return TenantSummary(tenant_id, 0, 0, skipped=True)
            await conn.execute("DELETE FROM chat_messages WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM chat_sessions WHERE tenant_id = $1", tenant_id)
            if progress is not None:
                progress(f"{tenant_id}: deleted the existing rows (--replace)")
        sessions = shape.sessions + shape.huge_sessions
        big = shape.big
        meter = _Meter(progress if big else None, tenant_id, expected=0)
        await conn.copy_records_to_table(
            "chat_sessions",
            records=_session_rows(tenant_id, _plans(spec, shape), meter),
            columns=SESSION_COLUMNS,
        )
        if big and progress is not None:
            progress(
                f"{tenant_id}: {sessions:,} sessions written, loading {meter.expected:,} messages"
            )
        meter.start()
        await conn.copy_records_to_table(
            "chat_messages",
            records=_message_rows(spec, shape, pools, meter),
            columns=MESSAGE_COLUMNS,
        )
        if big and progress is not None:
            progress(meter.line(time.monotonic()) + ", committing")
    return TenantSummary(tenant_id, sessions, meter.rows)
