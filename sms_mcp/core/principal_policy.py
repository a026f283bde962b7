"""Per-principal policy: an allow-list, a daily budget and a promotional switch per caller, from a JSON policy
file (``SMS_MCP_POLICY_FILE``), applied *on top of* the server-wide policy (core/policy.py): a number must be
allowed by both lists, a promotional template needs both switches, and both budgets must have room.

The file::

    {
      "default":    {"allowed_numbers": ["+86138*"], "daily_limit": 100, "allow_promotional": false},
      "principals": {"alice@example.com": {"daily_limit": 500}},
      "clients":    {"ops-bot": {"allowed_numbers": ["+8613800138000"]}}
    }

A caller's rules are its entry under ``principals`` (by token subject), else under ``clients`` (by OAuth
client id), else ``default``; a missing field means "no extra restriction". Without a file, only the
server-wide policy applies. The allow-list matching is core/policy.py's, so both lists read the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sms_mcp.config import ConfigError, Settings
from sms_mcp.core.errors import SmsError
from sms_mcp.core.models import TemplateInfo
from sms_mcp.core.phones import Phone, allow_listed, normalise_allow_list
from sms_mcp.core.ports import Principal


@dataclass(frozen=True)
class PrincipalRules:
    allowed_numbers: tuple[str, ...] | None = None
    daily_limit: int | None = None
    allow_promotional: bool | None = None

    @classmethod
    def parse(cls, where: str, raw: Any) -> PrincipalRules:
        if not isinstance(raw, dict):
            raise ConfigError(f"policy file: {where} must be an object")
        unknown = sorted(set(raw) - {"allowed_numbers", "daily_limit", "allow_promotional"})
        if unknown:
            raise ConfigError(f"policy file: {where} has unknown field(s) {', '.join(unknown)[:200]}; expected "
                              "allowed_numbers, daily_limit, allow_promotional")
        numbers = raw.get("allowed_numbers")
        if numbers is not None and (not isinstance(numbers, list) or not all(
                isinstance(n, str) and n.strip() for n in numbers)):
            raise ConfigError(f"policy file: {where}.allowed_numbers must be a list of numbers or patterns")
        limit = raw.get("daily_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"policy file: {where}.daily_limit must be a whole number >= 0")
        promotional = raw.get("allow_promotional")
        if promotional is not None and not isinstance(promotional, bool):
            raise ConfigError(f"policy file: {where}.allow_promotional must be true or false")
        if numbers is not None:
            try:
                numbers = normalise_allow_list(numbers)
            except ValueError as err:
                raise ConfigError(f"policy file: {where}.allowed_numbers: {err}") from None
        return cls(numbers, limit, promotional)


class PrincipalPolicy:
    """The policy file, loaded once at start (a bad file stops the server before it serves)."""

    def __init__(self, settings: Settings, default: PrincipalRules | None,
                 principals: dict[str, PrincipalRules], clients: dict[str, PrincipalRules]) -> None:
        self.settings = settings
        self.default = default
        self.principals = principals
        self.clients = clients

    @classmethod
    def load(cls, settings: Settings, path: Path) -> PrincipalPolicy:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"SMS_MCP_POLICY_FILE={str(path)[:200]!r}: cannot read it ({err.strerror})") from None
        except ValueError as err:
            raise ConfigError(f"SMS_MCP_POLICY_FILE={str(path)[:200]!r}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError("policy file: the top level must be an object")
        unknown = sorted(set(data) - {"default", "principals", "clients"})
        if unknown:
            raise ConfigError(f"policy file: unknown key(s) {', '.join(unknown)[:200]}; expected default, "
                              "principals, clients")
        default = PrincipalRules.parse("default", data["default"]) if "default" in data else None
        tables: dict[str, dict[str, PrincipalRules]] = {}
        for table in ("principals", "clients"):
            raw = data.get(table, {})
            if not isinstance(raw, dict):
                raise ConfigError(f"policy file: {table} must be an object keyed by name")
            tables[table] = {str(k): PrincipalRules.parse(f"{table}[{str(k)[:40]!r}]", v) for k, v in raw.items()}
        return cls(settings, default, tables["principals"], tables["clients"])

    def rules_for(self, caller: Principal | None) -> PrincipalRules | None:
        if caller is None:
            return None
        return self.principals.get(caller.subject) or self.clients.get(caller.client_id) or self.default

    def check_plan(self, caller: Principal | None, phones: list[Phone], template: TemplateInfo) -> None:
        """Refuse, before anything is stored or sent, what this caller's own rules do not allow."""
        rules = self.rules_for(caller)
        if rules is None:
            return
        if rules.allowed_numbers is not None:
            # The server-wide matcher on this caller's list (normalised like SMS_MCP_ALLOWED_NUMBERS when the file
            # was loaded): one reading of "allowed" everywhere. An empty list allows nobody.
            refused = [p.masked for p in phones if not allow_listed(p, rules.allowed_numbers)]
            if refused:
                raise SmsError("sms_mcp.PRINCIPAL_NUMBER_NOT_ALLOWED",
                               f"{', '.join(refused[:5])}{' …' if len(refused) > 5 else ''} not in your allow-list "
                               "(the operator's per-principal policy file); nothing was sent.",
                               "Only numbers on your allow-list can receive SMS from you; ask the operator.")
        if template.type == "promotional" and rules.allow_promotional is False:
            raise SmsError("sms_mcp.PRINCIPAL_PROMOTIONAL_DISABLED",
                           f"Template {template.template_code} is promotional; promotional sends are disabled "
                           "for you (per-principal policy file); nothing was sent.",
                           "Ask the operator to set allow_promotional for you, or choose another template.")

    def daily_limit(self, caller: Principal | None) -> int | None:
        rules = self.rules_for(caller)
        return rules.daily_limit if rules is not None else None
