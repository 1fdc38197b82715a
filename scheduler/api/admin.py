"""neocloud.v1.AdminService: operators manage tenants, tokens, contracts, rate
cards, settings, cordons and GPU ownership, and read the audit trail. Everything
needs an operator token, except that a tenant may list its own contracts (it
names them when it submits reserved jobs).

What can never happen is refused here, naming the limit: a contract for an
unknown tenant or node (NOT_FOUND), for more GPUs of a model than the fleet has
or for a contract the rate card in force cannot price (FAILED_PRECONDITION)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeAlias

import grpc

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PermissionDeniedError
from neocloud.scheduler.api import convert
from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.billing.live import LiveRateCard, open_invoice_changes
from neocloud.scheduler.billing.ratecard import RateCard, parse_ratecard
from neocloud.scheduler.ingest import ownership
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.store import settings as site_settings
from neocloud.scheduler.store import validate
from neocloud.scheduler.store.admin import DEFAULT_ROTATE_GRACE_S, MAX_AUDIT_LIST, default_expiry, token_hash
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.ratecards import StoredRateCard, text_sha256
from neocloud.scheduler.store.records import ContractRecord, Role, TokenRecord
from neocloud.v1 import admin_pb2 as pb
from neocloud.v1 import admin_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


def _check_priced(card: RateCard | None, contract_id: str, power_w: float) -> None:
    """A contract is created only if the card in force can bill it."""
    if card is None:
        raise FailedPreconditionError(
            "no rate card to price the contract: apply one first (neocloud admin ratecard apply FILE)"
        )
    terms = card.contracts.get(contract_id)
    if terms is None:
        raise FailedPreconditionError(
            f"rate card {card.version or card.source} has no terms for contract {contract_id}: add "
            f"contracts.{contract_id} (commitment_per_month, overage_per_gpu_hour, sla_credit_per_gpu_hour)"
            " and apply it (neocloud admin ratecard apply FILE) before creating the contract"
        )
    if power_w > 0 and terms.nominal_gpu_w is None and terms.included_gpu_hours_per_month is None:
        raise FailedPreconditionError(
            f"contract {contract_id} is for power: its terms ({terms.where}) need nominal_gpu_w or"
            " included_gpu_hours_per_month"
        )


def _check_fleet(fleet: dict[str, int], gpus: int, model: str | None) -> None:
    """A GPU contract fits the fleet the scheduler knows (every GPU an agent registered)."""
    if gpus <= 0:
        return
    if model is not None and model not in fleet:
        known = ", ".join(f"{m} ({n})" for m, n in sorted(fleet.items())) or "none yet"
        raise FailedPreconditionError(f"the fleet has no GPU of model {model!r}; it has: {known}")
    have = fleet[model] if model is not None else sum(fleet.values())
    if gpus > have:
        of = f" of model {model}" if model is not None else ""
        raise FailedPreconditionError(f"a contract for {gpus} GPUs{of}: the fleet has {have}")


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(
        self,
        store: JobStore,
        clock: Callable[[], float] = time.time,
        telemetry: TelemetryService | None = None,
        card: RateCard | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """`telemetry`: the running ingest, whose live fleet a GPU move changes with the store
        (None on a server that ingests nothing: the store alone changes). `card`: the
        scheduler's --rate-card, in force until a version is applied."""
        self._store = store
        self._auth = auth or Authenticator(store)
        self._clock = clock
        self._telemetry = telemetry
        self._cards = LiveRateCard(store.latest_ratecard, card)

    async def CreateTenant(self, request: pb.CreateTenantRequest, context: Context) -> pb.Tenant:  # noqa: N802
        await self._auth.operator(context)
        weight = request.weight if request.HasField("weight") else 1.0
        args = (request.name, weight, self._clock(), request.internal)
        tenant = await asyncio.to_thread(self._store.create_tenant, *args)
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
        expires = request.expires_at if request.HasField("expires_at") else default_expiry(role, now)
        token = await asyncio.to_thread(self._store.create_token, role, request.name, tenant, now, expires)
        info = TokenRecord(request.name, role, tenant, now, None, expires, token_hash(token)[:12])
        logger.info("token %s (%s) created by %s", request.name, role, caller.token_name)
        return pb.CreateTokenResponse(info=convert.token_to_proto(info), token=token)

    async def ListTokens(self, request: pb.ListTokensRequest, context: Context) -> pb.ListTokensResponse:  # noqa: N802
        await self._auth.operator(context)
        tokens = await asyncio.to_thread(self._store.list_tokens, request.include_revoked, self._clock())
        return pb.ListTokensResponse(tokens=[convert.token_to_proto(t) for t in tokens])

    async def RevokeToken(  # noqa: N802
        self, request: pb.RevokeTokenRequest, context: Context
    ) -> pb.RevokeTokenResponse:
        caller = await self._auth.operator(context)
        await asyncio.to_thread(self._store.revoke_token, request.name, self._clock())
        logger.info("token %s revoked by %s", request.name, caller.token_name)
        return pb.RevokeTokenResponse()

    async def RotateToken(  # noqa: N802
        self, request: pb.RotateTokenRequest, context: Context
    ) -> pb.RotateTokenResponse:
        caller = await self._auth.operator(context)
        grace = request.grace_s if request.HasField("grace_s") else DEFAULT_ROTATE_GRACE_S
        expires = request.expires_at if request.HasField("expires_at") else None
        args = (request.name, grace, expires, caller.token_name, self._clock())
        token, new, old = await asyncio.to_thread(self._store.rotate_token, *args)
        return pb.RotateTokenResponse(info=convert.token_to_proto(new), token=token, old=convert.token_to_proto(old))

    async def CreateContract(self, request: pb.CreateContractRequest, context: Context) -> pb.Contract:  # noqa: N802
        caller = await self._auth.operator(context)
        start = convert.time_s("start", request.start)
        end = convert.time_s("end", request.end)
        contract = await asyncio.to_thread(self._create_contract, request, start, end, caller.token_name)
        return convert.contract_to_proto(contract)

    def _create_contract(
        self, request: pb.CreateContractRequest, start: float, end: float, actor: str
    ) -> ContractRecord:
        model = request.gpu_model or None
        # What the request says is checked before what exists: INVALID_ARGUMENT first.
        validate.contract_terms(request.gpus, request.power_w, model, start, end)
        if not request.contract_id:
            raise InvalidArgumentError(
                "contract_id is required: name the contract as the rate card's contracts: section does"
            )
        validate.name("contract_id", request.contract_id)
        if not self._store.tenant_exists(request.tenant):
            raise NotFoundError(f"tenant {request.tenant!r} does not exist: create it first")
        _check_fleet(self._store.fleet_gpus(), request.gpus, model)
        sequence, card = self._cards.current_with_sequence()
        _check_priced(card, request.contract_id, request.power_w)
        return self._store.create_contract(
            request.tenant,
            start,
            end,
            request.gpus,
            request.power_w,
            model,
            self._clock(),
            contract_id=request.contract_id,
            card_sequence=sequence,
            actor=actor,
        )

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
        caller = await self._auth.operator(context)
        await asyncio.to_thread(self._store.delete_contract, request.contract_id, self._clock(), caller.token_name)
        return pb.DeleteContractResponse()

    async def EndContract(self, request: pb.EndContractRequest, context: Context) -> pb.Contract:  # noqa: N802
        caller = await self._auth.operator(context)
        now = self._clock()
        at = convert.time_s("at", request.at) if request.at else now
        ended = await asyncio.to_thread(self._store.end_contract, request.contract_id, at, now, caller.token_name)
        logger.info("contract %s ended at %.0f by %s", ended.contract_id, at, caller.token_name)
        return convert.contract_to_proto(ended)

    async def ApplyRateCard(  # noqa: N802
        self, request: pb.ApplyRateCardRequest, context: Context
    ) -> pb.ApplyRateCardResponse:
        caller = await self._auth.operator(context)
        return await asyncio.to_thread(self._apply_ratecard, request, caller.token_name)

    def _apply_ratecard(self, request: pb.ApplyRateCardRequest, actor: str) -> pb.ApplyRateCardResponse:
        source = request.source or "ratecard.yaml"
        new = parse_ratecard(request.yaml, source)  # errors name the file, line and field
        now = self._clock()
        sequence, old = self._cards.current_with_sequence()
        missing = [c.contract_id for c in self._store.list_contracts() if c.contract_id not in new.contracts]
        if missing:
            raise FailedPreconditionError(
                f"{source}: {len(missing)} contract(s) would have no terms, e.g. contracts.{missing[0]}:"
                f" contracts are ended, never dropped from the card ({', '.join(missing[:10])})"
            )
        with self._store.reading() as db:
            period, changes = open_invoice_changes(db, old, new, now)
        if request.dry_run:
            sha = text_sha256(request.yaml)
            version = StoredRateCard(sequence + 1, sha, source, "", actor, now)
            applied = False
        else:
            version, applied = self._store.apply_ratecard(
                request.yaml, source, actor, frozenset(new.contracts), sequence, now
            )
        return pb.ApplyRateCardResponse(
            version=convert.ratecard_version_to_proto(version),
            applied=applied,
            period=period,
            changes=[
                pb.InvoiceChange(tenant=c.tenant, before=c.before, after=c.after, currency=c.currency, error=c.error)
                for c in changes
            ],
        )

    async def ListRateCards(  # noqa: N802
        self, request: pb.ListRateCardsRequest, context: Context
    ) -> pb.ListRateCardsResponse:
        await self._auth.operator(context)
        versions = await asyncio.to_thread(self._store.ratecard_versions)
        return pb.ListRateCardsResponse(versions=[convert.ratecard_version_to_proto(v) for v in versions])

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
        if not await asyncio.to_thread(self._store.node_known, request.node_id):
            raise NotFoundError(f"no node {request.node_id[:64]!r}: a node is known once its agent has connected")
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
            event=convert.audit_event_to_proto(moved.event),
        )

    async def ListAuditEvents(  # noqa: N802
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        await self._auth.operator(context)
        limit = request.limit or MAX_AUDIT_LIST
        events = await asyncio.to_thread(self._store.audit_events, request.subject or None, limit)
        return pb.ListAuditEventsResponse(events=[convert.audit_event_to_proto(e) for e in events])
