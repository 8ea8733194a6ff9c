import asyncio
import sys

from sessionmonitoring_client import NotFoundError, SessionMonitoringClient, SessionStatus

CLOSED = SessionStatus.SESSION_STATUS_CLOSED


async def main(target: str = "localhost:50051", tenant: str = "demo") -> None:
    async with SessionMonitoringClient(target, tenant=tenant, deadline=5.0) as client:
        async for session in client.iter_sessions(status=CLOSED, page_size=2):
            print(session.session_id, session.channel_type, session.end_time.ToJsonString())
        detail = await client.get_session_detail("demo-session-004")
        print("messages:", len(detail.messages), "tool calls:", len(detail.trace.tools))
        session = await client.update_session_status("demo-session-005", CLOSED)
        print(session.session_id, SessionStatus.Name(session.status))
        try:
            await client.get_session_detail("no-such-session")
        except NotFoundError as error:
            print(error.reason, error.request_id)


asyncio.run(main(*sys.argv[1:3]))
