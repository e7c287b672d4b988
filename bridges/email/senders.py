"""Is the sender who they say? SPF (pyspf) for the address that sent the message to us, DKIM
(dkimpy) for the signatures it carries; shown on the message, and the policy of
``[courriel] politique_expediteur`` applied: « accepter » (shown only), « signaler »
(a warning on an unverified message), « refuser » (a forged one refused at SMTP time, 550).

The bridge usually sits behind the collectivité's mail server: for a connection from one of
``relais_entrants`` (loopback by default), the sending server's address is read from the
Received header that relay added, not taken from the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser

import dkim
import dns.resolver
import spf

_RECEIVED_IP = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")


@dataclass(frozen=True)
class SenderCheck:
    spf: str  # pass, fail, softfail, neutral, none, temperror, permerror
    dkim: str  # pass, fail, none

    @property
    def verified(self) -> bool:
        return self.spf == "pass" or self.dkim == "pass"

    @property
    def forged(self) -> bool:
        """Refused by the sender's own domain (SPF « -all ») and no valid signature either."""
        return self.spf == "fail" and self.dkim != "pass"


def use_nameserver(address: str) -> None:
    """Every DNS question of the process (SPF, DKIM keys) to this server (``host`` or ``host:port``)."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host or address]
    resolver.port = int(port) if port else 53
    resolver.lifetime = 10
    dns.resolver.default_resolver = resolver


def sending_address(peer: str, raw: bytes, trusted: list[str]) -> str:
    """The address of the server that handed the message to our side."""
    if peer not in trusted:
        return peer
    headers = BytesHeaderParser().parsebytes(raw)
    for received in headers.get_all("Received", []):
        for candidate in _RECEIVED_IP.findall(str(received)):
            try:
                if not ipaddress.ip_address(candidate).is_loopback:
                    return str(candidate)
            except ValueError:
                continue
        break  # only the header our relay added (the first) is trusted
    return peer


def _check(raw: bytes, address: str, mail_from: str, helo: str) -> SenderCheck:
    try:
        spf_result, _ = spf.check2(i=address, s=mail_from or f"postmaster@{helo}", h=helo or "inconnu", timeout=15)
    except Exception:  # a broken record or DNS answer: undecided, never a crash
        spf_result = "temperror"
    if b"dkim-signature:" not in raw[:200_000].lower():
        dkim_result = "none"
    else:
        try:
            dkim_result = "pass" if dkim.verify(raw) else "fail"
        except Exception:
            dkim_result = "fail"
    return SenderCheck(str(spf_result), dkim_result)


async def check(raw: bytes, peer: str, mail_from: str, helo: str, trusted: list[str]) -> SenderCheck:
    return await asyncio.to_thread(_check, raw, sending_address(peer, raw, trusted), mail_from, helo)
