"""Message counts per session kept by triggers, so a 50,000-message session costs no more to
list or inspect than a short one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.data.ddl import backfill_by_tenant, run_briefly_locked

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Statement-level, with transition tables: one upsert per touched session per statement, in the
# writer's transaction, whoever the writer is (COPY included).
_APPLY = """
CREATE FUNCTION chat_session_message_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO chat_session_message_counts AS c (tenant_id, session_id, n)
    SELECT tenant_id, session_id, count(*) FROM new_rows GROUP BY tenant_id, session_id
    ON CONFLICT (tenant_id, session_id) DO UPDATE SET n = c.n + EXCLUDED.n;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO chat_session_message_counts AS c (tenant_id, session_id, n)
    SELECT tenant_id, session_id, -count(*) FROM old_rows GROUP BY tenant_id, session_id
    ON CONFLICT (tenant_id, session_id) DO UPDATE SET n = c.n + EXCLUDED.n;
  ELSE
    -- Only messages moved to another session change counts; edits of content do not.
    INSERT INTO chat_session_message_counts AS c (tenant_id, session_id, n)
    SELECT tenant_id, session_id, sum(d) FROM (
      SELECT o.tenant_id, o.session_id, -1 AS d
        FROM old_rows AS o
        LEFT JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
       WHERE n.id IS NULL OR (n.session_id, n.tenant_id) IS DISTINCT FROM (o.session_id, o.tenant_id)
      UNION ALL
      SELECT n.tenant_id, n.session_id, 1
        FROM new_rows AS n
        LEFT JOIN old_rows AS o ON n.tenant_id = o.tenant_id AND n.id = o.id
       WHERE o.id IS NULL OR (n.session_id, n.tenant_id) IS DISTINCT FROM (o.session_id, o.tenant_id)
    ) AS moved
    GROUP BY tenant_id, session_id
    ON CONFLICT (tenant_id, session_id) DO UPDATE SET n = c.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END
$$;
"""


# What a recount of one tenant's messages says each session's counter lacks (see 0002).
_BACKFILL = """
INSERT INTO chat_session_message_counts AS c (tenant_id, session_id, n)
SELECT tenant_id, session_id, sum(n) FROM (
  SELECT tenant_id, session_id, 1 AS n FROM chat_messages WHERE tenant_id = :tenant_id
  UNION ALL
  SELECT tenant_id, session_id, -n FROM chat_session_message_counts WHERE tenant_id = :tenant_id
) AS m GROUP BY tenant_id, session_id HAVING sum(n) <> 0
ON CONFLICT (tenant_id, session_id) DO UPDATE SET n = c.n + EXCLUDED.n
"""


def upgrade() -> None:
    op.create_table(
        "chat_session_message_counts",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", name="pk_chat_session_message_counts"),
    )
    op.execute(_APPLY)
    run_briefly_locked(
        op.get_bind(),
        *(
            f"CREATE TRIGGER chat_session_message_counts_{event.lower()} AFTER {event} "
            f"ON chat_messages REFERENCING {tables} "
            "FOR EACH STATEMENT EXECUTE FUNCTION chat_session_message_counts_apply()"
            for event, tables in (
                ("INSERT", "NEW TABLE AS new_rows"),
                ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                ("DELETE", "OLD TABLE AS old_rows"),
            )
        ),
    )
    backfill_by_tenant("chat_messages", _BACKFILL)


def downgrade() -> None:
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER chat_session_message_counts_{event} ON chat_messages")
    op.execute("DROP FUNCTION chat_session_message_counts_apply()")
    op.drop_table("chat_session_message_counts")
