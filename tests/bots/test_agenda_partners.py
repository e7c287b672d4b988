"""@agenda in a room shared with a partner administration: the partner's agent uses that
room's calendar and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bots.partners import AgentsOn, mairie_bots, said, shared_room
from tests.harness.federation import Federation

pytestmark = pytest.mark.usefixtures("in_french")


@pytest.fixture
def mairie_agenda(federation: Federation) -> Iterator[str]:
    with mairie_bots(federation):
        yield federation.mairie.user_id("agenda")


async def test_a_partner_agent_sees_the_shared_room_s_calendar_and_nothing_else(
    federation: Federation, agents_on: AgentsOn, mairie_agenda: str
) -> None:
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    internal = await shared_room(claire, mairie_agenda, access="interne", name="Urbanisme")
    assert "créé" in await said(claire, internal, mairie_agenda, "!agenda créer urbanisme-interne")
    await said(claire, internal, mairie_agenda, "!agenda ajoute Arbitrage budgétaire confidentiel le 9/3/2027 10h")

    shared = await shared_room(claire, mairie_agenda, paul, access="partenaires", name="Piste cyclable")
    await paul.wait_for_members_including(shared, mairie_agenda)
    assert "créé" in await said(claire, shared, mairie_agenda, "!agenda créer piste-cyclable")
    await said(claire, shared, mairie_agenda, "!agenda ajoute Comité de pilotage le 10/3/2027 14h")
    await paul.wait_for_text(shared, lambda m: m.body.startswith("Ajouté : n°1"), timeout=60)  # caught up

    details = await said(paul, shared, mairie_agenda, "!agenda détails 1")
    assert details.startswith("n°1 — Comité de pilotage · mercredi 10 mars 2027, 14:00–15:00")
    week = await said(paul, shared, mairie_agenda, "!agenda mois")
    assert "Arbitrage" not in week
    # Binding is for the room's admins, checked first: a partner learns nothing of other rooms' calendars.
    refused = await said(paul, shared, mairie_agenda, "!agenda lier urbanisme-interne")
    assert refused == "Seul un administrateur du salon peut lier ou délier son agenda."
    not_admin = await said(paul, shared, mairie_agenda, "!agenda délier")
    assert not_admin == "Seul un administrateur du salon peut lier ou délier son agenda."
    assert "Arbitrage" not in await said(paul, shared, mairie_agenda, "!agenda détails 2")
