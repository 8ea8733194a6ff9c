"""Who calls, for which tenant: the caller identified by the caller policy (when one is on) and
checked against the tenant named by `x-tenant-id`, which is then bound for the handler."""

from __future__ import annotations

from typing import Any

from server.transport.auth import AUTHORIZATION_METADATA_KEY, Caller, CallerPolicy
from server.transport.errors import TenantNotAllowedError
from server.transport.interceptors.chain import Call, Context, Method, Next, first
from server.transport.tenancy import bind_tenant, tenant_from_metadata, unbind_tenant

_CERTIFICATE_IDENTITY_KEYS = ("x509_common_name", "x509_subject_alternative_name")


class CallerAndTenant:
    """Binds the call's tenant; with a policy, only for a caller that may act for it."""

    def __init__(self, policy: CallerPolicy | None) -> None:
        self._policy = policy

    def wrap(self, method: Method, inner: Next) -> Next:
        """The step that admits the call and binds its tenant around `inner`."""
        policy = self._policy

        async def tenant_bound(request: Any, context: Context, call: Call) -> Any:
            caller = None
            if policy is not None:
                caller = _identify(policy, context, call)
                call.caller = caller.name
            call.tenant = tenant_from_metadata(call.metadata)
            if caller is not None and not caller.may_act_for(call.tenant):
                raise TenantNotAllowedError()
            token = bind_tenant(call.tenant)
            try:
                return await inner(request, context, call)
            finally:
                unbind_tenant(token)

        return tenant_bound


def _identify(policy: CallerPolicy, context: Context, call: Call) -> Caller:
    authorization = first(call.metadata, AUTHORIZATION_METADATA_KEY)
    auth = context.auth_context()
    return policy.identify(
        authorization=authorization if isinstance(authorization, str) else None,
        identities=[
            value.decode(errors="replace")
            for key in _CERTIFICATE_IDENTITY_KEYS
            for value in auth.get(key, ())
        ],
    )
