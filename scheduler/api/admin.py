"""neocloud.v1.AdminService: operators manage tenants, tokens, contracts,
settings, cordons and GPU ownership, and read the audit trail. Everything
needs an operator token, except that a tenant may list its own contracts (it
names them when it submits reserved jobs)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TypeAlias

import grpc

from neocloud.domain.errors import PermissionDeniedError
from neocloud.scheduler.api import convert
from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.ingest import ownership
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.store import settings as site_settings
from neocloud.scheduler.store.admin import MAX_AUDIT_LIST, AdminEvent
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Role, TokenRecord
from neocloud.v1 import admin_pb2 as pb
from neocloud.v1 import admin_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


def _event_to_proto(e: AdminEvent) -> pb.AuditEvent:
    return pb.AuditEvent(
        event_id=e.event_id,
        at=e.at,
        actor=e.actor,
        action=e.action,
        subject=e.subject,
        detail_json=json.dumps(e.detail, sort_keys=True),
        reason=e.reason,
    )


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(
        self, store: JobStore, clock: Callable[[], float] = time.time, telemetry: TelemetryService | None = None
    ) -> None:
        """`telemetry`: the running ingest, whose live fleet a GPU move changes with the store
        (None on a server that ingests nothing: the store alone changes)."""
        self._store = store
        self._auth = Authenticator(store)
        self._clock = clock
        self._telemetry = telemetry

    async def CreateTenant(self, request: pb.CreateTenantRequest, context: Context) -> pb.Tenant:  # noqa: N802
        await self._auth.operator(context)
        weight = request.weight if request.HasField("weight") else 1.0
        tenant = await asyncio.to_thread(self._store.create_tenant, request.name, weight, self._clock())
        return convert.tenant_to_proto(tenant)

    async def ListTenants(  # noqa: N802
        self, request: pb.ListTenantsRequest, context: Context
    ) -> pb.ListTenantsResponse:
        await self._auth.operator(context)
        tenants = await asyncio.to_thread(self._store.list_tenants)
        return pb.ListTenantsResponse(tenants=[convert.tenant_to_proto(t) for t in tenants])

    async def CreateToken(  # noqa: N802
        self, request: pb.CreateTokenRequest, context: Context
    ) -> pb.CreateTokenResponse:
        caller = await self._auth.operator(context)
        role = convert.role(request.role)
        tenant = request.tenant or None
        now = self._clock()
        token = await asyncio.to_thread(self._store.create_token, role, request.name, tenant, now)
        info = TokenRecord(request.name, role, tenant, now)
        logger.info("token %s (%s) created by %s", request.name, role, caller.token_name)
        return pb.CreateTokenResponse(info=convert.token_to_proto(info), token=token)

    async def ListTokens(self, request: pb.ListTokensRequest, context: Context) -> pb.ListTokensResponse:  # noqa: N802
        await self._auth.operator(context)
        tokens = await asyncio.to_thread(self._store.list_tokens, request.include_revoked)
        return pb.ListTokensResponse(tokens=[convert.token_to_proto(t) for t in tokens])

    async def RevokeToken(  # noqa: N802
        self, request: pb.RevokeTokenRequest, context: Context
    ) -> pb.RevokeTokenResponse:
        caller = await self._auth.operator(context)
        await asyncio.to_thread(self._store.revoke_token, request.name, self._clock())
        logger.info("token %s revoked by %s", request.name, caller.token_name)
        return pb.RevokeTokenResponse()

    async def CreateContract(self, request: pb.CreateContractRequest, context: Context) -> pb.Contract:  # noqa: N802
        await self._auth.operator(context)
        start = convert.time_s("start", request.start)
        end = convert.time_s("end", request.end)
        contract = await asyncio.to_thread(
            self._store.create_contract,
            request.tenant,
            start,
            end,
            request.gpus,
            request.power_w,
            request.gpu_model or None,
            self._clock(),
        )
        return convert.contract_to_proto(contract)

    async def ListContracts(  # noqa: N802
        self, request: pb.ListContractsRequest, context: Context
    ) -> pb.ListContractsResponse:
        principal = await self._auth.principal(context)
        tenant = request.tenant or None
        if principal.role is Role.TENANT:
            if tenant not in (None, principal.tenant):
                raise PermissionDeniedError("a tenant lists only its own contracts")
            tenant = principal.tenant
        elif principal.role is not Role.OPERATOR:
            raise PermissionDeniedError("contracts are listed by operators and by the tenants that hold them")
        contracts = await asyncio.to_thread(self._store.list_contracts, tenant)
        return pb.ListContractsResponse(contracts=[convert.contract_to_proto(c) for c in contracts])

    async def DeleteContract(  # noqa: N802
        self, request: pb.DeleteContractRequest, context: Context
    ) -> pb.DeleteContractResponse:
        await self._auth.operator(context)
        await asyncio.to_thread(self._store.delete_contract, request.contract_id)
        return pb.DeleteContractResponse()

    async def SetSetting(self, request: pb.SetSettingRequest, context: Context) -> pb.Setting:  # noqa: N802
        caller = await self._auth.operator(context)
        value = await asyncio.to_thread(self._store.set_setting, request.key, request.value)
        logger.info("setting %s set to %s by %s", request.key, site_settings.render(value), caller.token_name)
        return convert.setting_to_proto(request.key, value, is_default=False)

    async def GetSettings(  # noqa: N802
        self, request: pb.GetSettingsRequest, context: Context
    ) -> pb.GetSettingsResponse:
        await self._auth.operator(context)
        stored = await asyncio.to_thread(self._store.stored_settings)
        values = await asyncio.to_thread(self._store.get_settings)
        return pb.GetSettingsResponse(
            settings=[convert.setting_to_proto(key, value, key not in stored) for key, value in values.items()]
        )

    async def CordonNode(self, request: pb.CordonNodeRequest, context: Context) -> pb.Cordon:  # noqa: N802
        caller = await self._auth.operator(context)
        cordon = await asyncio.to_thread(self._store.cordon, request.node_id, request.reason, self._clock())
        logger.info("node %s cordoned by %s", request.node_id, caller.token_name)
        return convert.cordon_to_proto(cordon)

    async def UncordonNode(  # noqa: N802
        self, request: pb.UncordonNodeRequest, context: Context
    ) -> pb.UncordonNodeResponse:
        await self._auth.operator(context)
        await asyncio.to_thread(self._store.uncordon, request.node_id)
        return pb.UncordonNodeResponse()

    async def ListCordons(  # noqa: N802
        self, request: pb.ListCordonsRequest, context: Context
    ) -> pb.ListCordonsResponse:
        await self._auth.operator(context)
        cordons = await asyncio.to_thread(self._store.list_cordons)
        return pb.ListCordonsResponse(cordons=[convert.cordon_to_proto(c) for c in cordons])

    async def MoveGpu(self, request: pb.MoveGpuRequest, context: Context) -> pb.GpuMove:  # noqa: N802
        caller = await self._auth.operator(context)
        args = (request.gpu_uuid, request.to_node, request.reason, caller.token_name, self._clock())
        if self._telemetry is None:
            moved = await asyncio.to_thread(self._store.move_gpu, *args)
        else:
            moved = await ownership.move_gpu(self._telemetry, self._store, *args)
        return pb.GpuMove(
            gpu_uuid=moved.uuid,
            from_node=moved.from_node,
            to_node=moved.to_node,
            energy_total_mj=moved.energy_total_mj,
            event=_event_to_proto(moved.event),
        )

    async def ListAuditEvents(  # noqa: N802
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        await self._auth.operator(context)
        limit = request.limit or MAX_AUDIT_LIST
        events = await asyncio.to_thread(self._store.audit_events, request.subject or None, limit)
        return pb.ListAuditEventsResponse(events=[_event_to_proto(e) for e in events])
