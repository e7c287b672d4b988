"""`maillage partenaire ajouter|retirer|liste`: the federation allowlist, edited in place.

The config file keeps its comments (tomlkit); the new file is validated before it
is written, so a refused change leaves it untouched. A running stack is then
reloaded: Synapse restarts with the new list (a few seconds; clients and partner
servers retry, nothing is lost).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomlkit

from maillage.config import Config, parse_config
from maillage.i18n import t


class PartnerError(Exception):
    """The change makes no sense (already a partner, not a partner); message in French."""


def change_partners(path: Path, *, add: str | None = None, remove: str | None = None) -> Config:
    document = tomlkit.parse(path.read_text("utf-8"))
    if "federation" not in document:
        document["federation"] = tomlkit.table()
    federation = document["federation"]
    assert isinstance(federation, tomlkit.items.Table)
    partners = [str(p) for p in federation.get("partenaires", [])]
    if add is not None:
        if add in partners:
            raise PartnerError(t("partners.already", server=add))
        partners.append(add)
    if remove is not None:
        if remove not in partners:
            raise PartnerError(t("partners.absent", server=remove))
        partners.remove(remove)
    array = tomlkit.array()
    array.extend(partners)
    federation["partenaires"] = array
    text = tomlkit.dumps(document)
    config = parse_config(tomllib.loads(text), source=path)  # raises ConfigError: nothing written
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return config
