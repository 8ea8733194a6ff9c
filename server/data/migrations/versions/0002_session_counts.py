"""Exact session counts without scanning the tenant: per-day counters kept by triggers.

`chat_session_counts` holds, per tenant, UTC day, effective status and channel, how many sessions
exist. Statement-level triggers with transition tables keep it exact for every writer (including
other services and COPY), in the writer's own transaction, so a count read in the same snapshot
as the rows always agrees with them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.data.ddl import backfill_by_tenant, run_briefly_locked

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The bucket a session row counts in; must match server.data.schema.EFFECTIVE_STATUS_SQL.
_BUCKET = """
  tenant_id,
  (created_at AT TIME ZONE 'UTC')::date AS day,
  COALESCE(metadata ->> 'status', 'active') AS status,
  channel_type
"""

_FUNCTION = f"""
-- Inserted rows add to their buckets, deleted rows subtract from them.
CREATE FUNCTION chat_session_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
    SELECT tenant_id, day, status, channel_type, -count(*)
      FROM (SELECT {_BUCKET} FROM old_rows) AS o
     GROUP BY tenant_id, day, status, channel_type
    ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n;
  ELSE
    INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
    SELECT tenant_id, day, status, channel_type, count(*)
      FROM (SELECT {_BUCKET} FROM new_rows) AS n
     GROUP BY tenant_id, day, status, channel_type
    ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END
$$;
"""

_UPDATE_FUNCTION = f"""
CREATE FUNCTION chat_session_counts_apply_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- Only rows whose bucket changed move between counters; a status update that keeps the
  -- bucket (or touches other columns) writes nothing here.
  WITH moved AS (
    SELECT o.tenant_id AS o_tenant, o.day AS o_day, o.status AS o_status, o.channel_type AS o_channel,
           n.tenant_id AS n_tenant, n.day AS n_day, n.status AS n_status, n.channel_type AS n_channel
      FROM (SELECT session_id, {_BUCKET} FROM old_rows) AS o
      JOIN (SELECT session_id, {_BUCKET} FROM new_rows) AS n
        ON n.session_id = o.session_id AND n.tenant_id = o.tenant_id
     WHERE (o.day, o.status, o.channel_type) IS DISTINCT FROM (n.day, n.status, n.channel_type)
  ), deltas AS (
    SELECT o_tenant AS tenant_id, o_day AS day, o_status AS status, o_channel AS channel_type, -1 AS d
      FROM moved
    UNION ALL
    SELECT n_tenant, n_day, n_status, n_channel, 1 FROM moved
  )
  INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
  SELECT tenant_id, day, status, channel_type, sum(d) FROM deltas
   GROUP BY tenant_id, day, status, channel_type
  ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n;
  -- Rows whose key (tenant_id, session_id) itself changed cannot be paired: recount them.
  INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
  SELECT tenant_id, day, status, channel_type, sum(d) FROM (
    SELECT {_BUCKET}, -1 AS d FROM old_rows AS o
     WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n
                        WHERE n.tenant_id = o.tenant_id AND n.session_id = o.session_id)
    UNION ALL
    SELECT {_BUCKET}, 1 FROM new_rows AS n
     WHERE NOT EXISTS (SELECT 1 FROM old_rows AS o
                        WHERE n.tenant_id = o.tenant_id AND n.session_id = o.session_id)
  ) AS rekeyed
   GROUP BY tenant_id, day, status, channel_type
  ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END
$$;
"""


# Adds to each bucket what a recount of one tenant's rows says it lacks, all read in one
# snapshot: additive like the triggers' own upserts, so it is exact while they run.
_BACKFILL = f"""
INSERT INTO chat_session_counts AS c (tenant_id, day, status, channel_type, n)
SELECT tenant_id, day, status, channel_type, sum(n) FROM (
  SELECT {_BUCKET}, 1 AS n FROM chat_sessions WHERE tenant_id = :tenant_id
  UNION ALL
  SELECT tenant_id, day, status, channel_type, -n FROM chat_session_counts
   WHERE tenant_id = :tenant_id
) AS b GROUP BY tenant_id, day, status, channel_type HAVING sum(n) <> 0
ON CONFLICT (tenant_id, day, status, channel_type) DO UPDATE SET n = c.n + EXCLUDED.n
"""


def upgrade() -> None:
    op.create_table(
        "chat_session_counts",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("channel_type", sa.String(255)),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "uq_chat_session_counts_bucket",
        "chat_session_counts",
        ["tenant_id", "day", "status", "channel_type"],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.execute(_FUNCTION)
    op.execute(_UPDATE_FUNCTION)
    # Writers wait for the triggers only a moment (server.data.ddl); from the commit on, every
    # change is counted, and the backfill adds what came before, one tenant at a time.
    run_briefly_locked(
        op.get_bind(),
        "CREATE TRIGGER chat_session_counts_insert AFTER INSERT ON chat_sessions "
        "REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chat_session_counts_apply()",
        "CREATE TRIGGER chat_session_counts_update AFTER UPDATE ON chat_sessions "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chat_session_counts_apply_update()",
        "CREATE TRIGGER chat_session_counts_delete AFTER DELETE ON chat_sessions "
        "REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION chat_session_counts_apply()",
    )
    backfill_by_tenant("chat_sessions", _BACKFILL)


def downgrade() -> None:
    for trigger in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER chat_session_counts_{trigger} ON chat_sessions")
    op.execute("DROP FUNCTION chat_session_counts_apply_update()")
    op.execute("DROP FUNCTION chat_session_counts_apply()")
    op.drop_table("chat_session_counts")
