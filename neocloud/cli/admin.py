"""`neocloud admin ...`: tenants, API tokens, contracts, rate cards, settings,
cordons, GPU ownership and the audit trail (operator tokens; a tenant may list
its own contracts)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from neocloud.cli.common import UsageError, command, enum_word, fmt_time, parse_time, print_json, show, show_list
from neocloud.client import CALL_TIMEOUT_S, Client
from neocloud.v1 import admin_pb2 as pb

ROLES = {"operator": pb.ROLE_OPERATOR, "internal": pb.ROLE_INTERNAL, "tenant": pb.ROLE_TENANT}


def add_parser(subparsers: argparse._SubParsersAction, conn: argparse.ArgumentParser) -> None:
    admin = subparsers.add_parser(
        "admin",
        help="operate the site: tenants, tokens, contracts, settings, cordons, GPU moves, audit trail",
        description="Operator commands (they need an operator token).",
    )
    actions = admin.add_subparsers(dest="admin_action", metavar="ACTION")
    actions.required = True

    def leaf(parent: argparse._SubParsersAction, name: str, summary: str) -> argparse.ArgumentParser:
        description = summary[0].upper() + summary[1:] + "."
        parser: argparse.ArgumentParser = parent.add_parser(name, parents=[conn], help=summary, description=description)
        return parser

    tenant = actions.add_parser("tenant", help="create and list tenants", description="Tenants (customers).")
    tenant_actions = tenant.add_subparsers(dest="tenant_action", metavar="ACTION", required=True)
    p = leaf(tenant_actions, "create", "create a tenant")
    p.add_argument("name", metavar="NAME", help="lower-case letters, digits and '-'")
    p.add_argument("--weight", type=float, default=1.0, help="fair-share weight (default: %(default)s)")
    p.add_argument(
        "--internal",
        action="store_true",
        help="one of the lab's own teams: submits class internal only, its usage reported under its name",
    )
    p.set_defaults(func=command(_tenant_create))
    leaf(tenant_actions, "list", "list tenants").set_defaults(func=command(_tenant_list))

    token = actions.add_parser("token", help="create, list and revoke API tokens", description="API tokens.")
    token_actions = token.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    p = leaf(token_actions, "create", "create an API token and print it (it is shown only once)")
    p.add_argument("--role", choices=sorted(ROLES), required=True, help="what the token may do")
    p.add_argument("--tenant", help="the tenant a tenant token acts for")
    p.add_argument("--name", required=True, help="a name to know and revoke the token by")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in",
        type=parse_span,
        metavar="SPAN",
        help="lifetime, e.g. 90d, 12h, 30m (at most 366d; default: 90d for tenant and internal tokens, "
        "never for operator tokens)",
    )
    expiry.add_argument("--expires-at", type=parse_time, metavar="TIME", help="RFC 3339 / ISO 8601 or Unix seconds")
    p.set_defaults(func=command(_token_create))
    p = leaf(token_actions, "list", "list API tokens (names, ids, roles and expiries, never the tokens)")
    p.add_argument("--revoked", action="store_true", help="include revoked and expired tokens")
    p.set_defaults(func=command(_token_list))
    p = leaf(token_actions, "revoke", "revoke an API token (a rotated one's old token too)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=command(_token_revoke))
    p = leaf(
        token_actions, "rotate", "issue a new token of the same name, role and tenant; the old expires after --grace"
    )
    p.add_argument("name", metavar="NAME|ID", help="the token's name, or its id (token list)")
    p.add_argument("--grace", type=parse_span, default=3600.0, help="the old token works this long yet (default: 1h)")
    p.add_argument(
        "--expires-in", type=parse_span, metavar="SPAN", help="the new token's lifetime (default: the old one's)"
    )
    p.set_defaults(func=command(_token_rotate))

    contract = actions.add_parser("contract", help="reserved-capacity contracts", description="Contracts.")
    contract_actions = contract.add_subparsers(dest="contract_action", metavar="ACTION", required=True)
    p = leaf(contract_actions, "create", "create a contract: N GPUs or P watts over [start, end)")
    p.add_argument("--id", dest="contract_id", required=True, help="its name, as the rate card's contracts: gives it")
    p.add_argument("--tenant", required=True)
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--gpus", type=int, help="GPUs reserved")
    size.add_argument("--power-w", type=float, help="watts reserved")
    p.add_argument("--gpu-model", help="GPU model of a GPU contract")
    p.add_argument("--start", type=parse_time, default="now", help="'now', Unix seconds or ISO 8601 (default: now)")
    end = p.add_mutually_exclusive_group(required=True)
    end.add_argument("--end", type=parse_time, help="Unix seconds or ISO 8601 (UTC unless it names a zone)")
    end.add_argument("--days", type=float, help="length in days, instead of --end")
    p.set_defaults(func=command(_contract_create))
    p = leaf(contract_actions, "list", "list contracts")
    p.add_argument("--tenant", help="one tenant's contracts")
    p.set_defaults(func=command(_contract_list))
    p = leaf(contract_actions, "end", "end a contract (its past stays billable; reserved work winds down then)")
    p.add_argument("contract_id", metavar="CONTRACT_ID")
    p.add_argument("--at", type=parse_time, default="now", help="'now', Unix seconds or ISO 8601 (default: now)")
    p.set_defaults(func=command(_contract_end))
    p = leaf(contract_actions, "delete", "delete a contract that has not started and no job names (else: end)")
    p.add_argument("contract_id", metavar="CONTRACT_ID")
    p.set_defaults(func=command(_contract_delete))

    card = actions.add_parser("ratecard", help="versioned rate cards", description="Rate cards (prices, terms).")
    card_actions = card.add_subparsers(dest="ratecard_action", metavar="ACTION", required=True)
    p = leaf(card_actions, "apply", "validate a rate card, store it as a new version and switch to it")
    p.add_argument("file", metavar="FILE", type=Path)
    p.add_argument("--dry-run", action="store_true", help="only show what it changes on this month's invoices")
    p.set_defaults(func=command(_ratecard_apply))
    leaf(card_actions, "list", "list rate-card versions (the last is in force)").set_defaults(
        func=command(_ratecard_list)
    )

    p = leaf(actions, "set", "set a site setting (see `neocloud admin settings`)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.set_defaults(func=command(_set))
    leaf(actions, "settings", "show every site setting").set_defaults(func=command(_settings))

    p = leaf(actions, "cordon", "place nothing new on a node (running work stays)")
    p.add_argument("node_id", metavar="NODE")
    p.add_argument("--reason", required=True, help="why, for the other operators")
    p.set_defaults(func=command(_cordon))
    p = leaf(actions, "uncordon", "let work be placed on a node again")
    p.add_argument("node_id", metavar="NODE")
    p.set_defaults(func=command(_uncordon))
    leaf(actions, "cordons", "list cordoned nodes").set_defaults(func=command(_cordons))

    node = actions.add_parser("node", help="node inventory: GPU ownership", description="Nodes and their GPUs.")
    node_actions = node.add_subparsers(dest="node_action", metavar="ACTION", required=True)
    p = leaf(
        node_actions,
        "move-gpu",
        "give a GPU to another node after it moved between hosts (both agents stopped, no job on it; audited)",
    )
    p.add_argument("gpu_uuid", metavar="GPU_UUID", help="the GPU's NVML UUID (GPU-... or MIG-...)")
    p.add_argument("--to", dest="to_node", metavar="NODE_ID", required=True, help="the node that has it now")
    p.add_argument("--reason", default="", help="why, for the audit trail")
    p.set_defaults(func=command(_move_gpu))
    p = leaf(actions, "audit", "list what operators did (newest last)")
    p.add_argument("--subject", help="one subject's events (a GPU UUID, ...)")
    p.add_argument("--limit", type=int, default=100, help="at most this many, the newest (default: %(default)s)")
    p.set_defaults(func=command(_audit))


def _call(client: Client, method: str, request: object) -> Any:
    return getattr(client.admin, method)(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S)


def _tenant_create(args: argparse.Namespace, client: Client) -> None:
    request = pb.CreateTenantRequest(name=args.name, weight=args.weight, internal=args.internal)
    tenant = _call(client, "CreateTenant", request)
    show(args, tenant, f"{'internal team' if tenant.internal else 'tenant'} {args.name} created")


def _tenant_list(args: argparse.Namespace, client: Client) -> None:
    tenants = _call(client, "ListTenants", pb.ListTenantsRequest()).tenants
    show_list(args, tenants, ("TENANT", "WEIGHT", "CREATED", "CLASS"), _tenant_row)


def _tenant_row(t: pb.Tenant) -> tuple[object, ...]:
    return t.name, f"{t.weight:g}", fmt_time(t.created_at), "internal" if t.internal else "tenant"


def _token_create(args: argparse.Namespace, client: Client) -> None:
    request = pb.CreateTokenRequest(name=args.name, role=ROLES[args.role], tenant=args.tenant or "")
    if args.expires_in is not None:
        request.expires_at = time.time() + args.expires_in
    elif args.expires_at is not None:
        request.expires_at = args.expires_at
    _print_new_token(args, _call(client, "CreateToken", request))


def _token_rotate(args: argparse.Namespace, client: Client) -> None:
    request = pb.RotateTokenRequest(name=args.name, grace_s=args.grace)
    if args.expires_in is not None:
        request.expires_at = time.time() + args.expires_in
    rotated = _call(client, "RotateToken", request)
    if not args.json:
        print(
            f"token {rotated.old.token_id} of {rotated.old.name} expires at {fmt_time(rotated.old.expires_at)}",
            file=sys.stderr,
        )
    _print_new_token(args, rotated)


def _print_new_token(args: argparse.Namespace, reply: pb.CreateTokenResponse | pb.RotateTokenResponse) -> None:
    if args.json:
        print_json(reply)
        return
    print(reply.token)
    expiry = fmt_time(reply.info.expires_at) if reply.info.HasField("expires_at") else "never"
    print(f"token {reply.info.token_id} of {reply.info.name} expires: {expiry}", file=sys.stderr)
    print("store this token now: it is not shown again (only its hash is kept)", file=sys.stderr)


def _token_list(args: argparse.Namespace, client: Client) -> None:
    tokens = _call(client, "ListTokens", pb.ListTokensRequest(include_revoked=args.revoked)).tokens
    show_list(args, tokens, ("NAME", "ID", "ROLE", "TENANT", "CREATED", "EXPIRES", "REVOKED"), _token_row)


def _token_row(t: pb.Token) -> tuple[object, ...]:
    revoked = fmt_time(t.revoked_at) if t.HasField("revoked_at") else "-"
    expires = fmt_time(t.expires_at) if t.HasField("expires_at") else "never"
    if t.HasField("superseded_at"):
        expires += " (rotated)"
    role = enum_word(pb.Role.Name(t.role), "ROLE_")
    return t.name, t.token_id, role, t.tenant or "-", fmt_time(t.created_at), expires, revoked


_SPAN_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_span(text: str) -> float:
    """'90d', '12h', '30m', '45s' or plain seconds -> seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SPAN_UNITS else (text, "s")
    try:
        seconds = float(number) * _SPAN_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a span like 90d, 12h, 30m or 45s") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a span is 0 or more")
    return seconds


def _token_revoke(args: argparse.Namespace, client: Client) -> None:
    _call(client, "RevokeToken", pb.RevokeTokenRequest(name=args.name))
    show(args, None, f"token {args.name} revoked")


def _contract_create(args: argparse.Namespace, client: Client) -> None:
    if args.days is not None and args.days <= 0:
        raise UsageError("--days must be more than 0")
    if args.gpus is not None and args.gpus <= 0:
        raise UsageError("--gpus must be more than 0")
    end = args.end if args.end is not None else args.start + args.days * 86400.0
    request = pb.CreateContractRequest(
        tenant=args.tenant,
        gpus=args.gpus or 0,
        power_w=args.power_w or 0.0,
        gpu_model=args.gpu_model or "",
        start=args.start,
        end=end,
        contract_id=args.contract_id,
    )
    contract = _call(client, "CreateContract", request)
    show(args, contract, contract.contract_id)


def _contract_list(args: argparse.Namespace, client: Client) -> None:
    contracts = _call(client, "ListContracts", pb.ListContractsRequest(tenant=args.tenant or "")).contracts
    show_list(args, contracts, ("CONTRACT", "TENANT", "SIZE", "MODEL", "START", "END"), _contract_row)


def _contract_row(c: pb.Contract) -> tuple[object, ...]:
    size = f"{c.gpus} GPUs" if c.gpus else f"{c.power_w / 1e6:g} MW"
    return c.contract_id, c.tenant, size, c.gpu_model or "any", fmt_time(c.start), fmt_time(c.end)


def _contract_end(args: argparse.Namespace, client: Client) -> None:
    contract = _call(client, "EndContract", pb.EndContractRequest(contract_id=args.contract_id, at=args.at))
    show(args, contract, f"contract {contract.contract_id} ends at {fmt_time(contract.end)}")


def _contract_delete(args: argparse.Namespace, client: Client) -> None:
    _call(client, "DeleteContract", pb.DeleteContractRequest(contract_id=args.contract_id))
    show(args, None, f"contract {args.contract_id} deleted")


def _ratecard_apply(args: argparse.Namespace, client: Client) -> None:
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {args.file}: {e}") from e
    request = pb.ApplyRateCardRequest(yaml=text, source=args.file.name, dry_run=args.dry_run)
    reply = _call(client, "ApplyRateCard", request)
    if args.json:
        print_json(reply)
        return
    v = reply.version
    if args.dry_run:
        print(f"dry run: {args.file} would be rate card {v.version} (nothing applied)")
    else:
        print(f"rate card {v.version} in force" + ("" if reply.applied else " (unchanged: the same text)"))
    print(f"open invoices ({reply.period}):")
    print(f"  {'TENANT':<24} {'BEFORE':>16} {'AFTER':>16}")
    for c in reply.changes:
        after = c.after or f"cannot rate: {c.error}"
        print(f"  {c.tenant:<24} {c.before or '-':>16} {after:>16} {c.currency}")


def _ratecard_list(args: argparse.Namespace, client: Client) -> None:
    versions = _call(client, "ListRateCards", pb.ListRateCardsRequest()).versions
    show_list(
        args,
        versions,
        ("VERSION", "APPLIED", "BY", "SOURCE", "SHA256"),
        lambda v: (v.version, fmt_time(v.applied_at), v.applied_by, v.source, v.sha256),
    )


def _set(args: argparse.Namespace, client: Client) -> None:
    setting = _call(client, "SetSetting", pb.SetSettingRequest(key=args.key, value=args.value))
    show(args, setting, f"{setting.key} = {setting.value}")


def _settings(args: argparse.Namespace, client: Client) -> None:
    settings = _call(client, "GetSettings", pb.GetSettingsRequest()).settings
    show_list(args, settings, ("KEY", "VALUE", "", "MEANING"), _setting_row)


def _setting_row(s: pb.Setting) -> tuple[object, ...]:
    return s.key, s.value, "default" if s.is_default else "set", s.description


def _cordon(args: argparse.Namespace, client: Client) -> None:
    cordon = _call(client, "CordonNode", pb.CordonNodeRequest(node_id=args.node_id, reason=args.reason))
    show(args, cordon, f"node {args.node_id} cordoned")


def _uncordon(args: argparse.Namespace, client: Client) -> None:
    _call(client, "UncordonNode", pb.UncordonNodeRequest(node_id=args.node_id))
    show(args, None, f"node {args.node_id} uncordoned")


def _cordons(args: argparse.Namespace, client: Client) -> None:
    cordons = _call(client, "ListCordons", pb.ListCordonsRequest()).cordons
    show_list(args, cordons, ("NODE", "SINCE", "REASON"), lambda c: (c.node_id, fmt_time(c.at), c.reason))


def _move_gpu(args: argparse.Namespace, client: Client) -> None:
    request = pb.MoveGpuRequest(gpu_uuid=args.gpu_uuid, to_node=args.to_node, reason=args.reason)
    moved = _call(client, "MoveGpu", request)
    show(
        args,
        moved,
        f"GPU {moved.gpu_uuid} moved from node {moved.from_node} to node {moved.to_node} "
        f"({moved.energy_total_mj / 1e3:.3f} J earned on {moved.from_node} stay in its ledger; "
        f"audit event {moved.event.event_id})",
    )


def _audit(args: argparse.Namespace, client: Client) -> None:
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit must be between 1 and 1000")
    request = pb.ListAuditEventsRequest(subject=args.subject or "", limit=args.limit)
    events = _call(client, "ListAuditEvents", request).events
    show_list(
        args,
        events,
        ("EVENT", "AT", "BY", "ACTION", "SUBJECT", "DETAIL", "REASON"),
        lambda e: (e.event_id, fmt_time(e.at), e.actor, e.action, e.subject, e.detail_json, e.reason or "-"),
    )
