"""A validation circuit with an actor of a partner administration: the agglomération's
agent is told in the shared room and in a direct room on their own homeserver, and acts
over federation as the mairie's agents do."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from pypdf import PdfReader

from tests.bots.partners import AgentsOn, mairie_bots, said, shared_room
from tests.bots.test_documents import post_file
from tests.harness.federation import Federation
from tests.harness.office import pdf_with_text

pytestmark = pytest.mark.usefixtures("in_french")


@pytest.fixture
def mairie_documents(federation: Federation) -> Iterator[str]:
    with mairie_bots(federation):
        yield federation.mairie.user_id("documents")


async def test_an_actor_on_the_agglo_visas_over_federation_and_the_circuit_ends_archived(
    federation: Federation, agents_on: AgentsOn, mairie_documents: str
) -> None:
    bot = mairie_documents
    claire = await agents_on(federation.mairie)("claire")
    paul = await agents_on(federation.agglo)("paul")
    room = await shared_room(claire, bot, paul, access="partenaires", name="Piste cyclable — convention")
    await paul.wait_for_members_including(room, bot)
    assert "Ce salon est lié" in await said(claire, room, bot, "!doc lier mobilite/convention")
    since = len(claire.received)
    await post_file(claire, room, pdf_with_text("Convention de financement de la piste cyclable"), "convention.pdf")
    filed = await claire.wait_for_text(room, lambda m: m.sender == bot and "Rangé dans" in m.body, since=since)
    name = filed.body.split("« ", 1)[1].split(" »", 1)[0].rpartition("/")[2]

    since = len(paul.received)
    command = f"!circuit lance {name} avis: {paul.user_id}, signature: {claire.user_id}"
    started = await said(claire, room, bot, command)
    number = int(started.removeprefix("Circuit n°").split(" ", 1)[0])
    notice = await paul.wait_for_text(room, lambda m: m.sender == bot and m.body.startswith(f"📝 Circuit n°{number}"),
                                      since=since, timeout=60)
    assert paul.user_id in notice.body and "avis" in notice.body
    direct = await paul.join_invitation()  # the bot's direct room, joined from the agglo's homeserver
    told = await paul.wait_for_text(direct, lambda m: m.body.startswith(f"📝 Circuit n°{number}"), timeout=90)
    assert "Le document est joint" in told.body
    assert "pas encore votre tour" in await said(claire, room, bot, f"!circuit signe {number}")

    visa = await said(paul, room, bot, f"!circuit vise {number} favorable, vu par l’agglo")
    assert visa.startswith(f"📝 Circuit n°{number} ") and f"✔ Visa enregistré ({paul.user_id})" in visa
    assert claire.user_id in visa  # the same message asks the mairie for the signature
    since = len(claire.received)
    assert "est validé" in await said(claire, room, bot, f"!circuit signe {number}")
    done = await claire.wait_for_text(room, lambda m: m.body.startswith(f"✅ Circuit n°{number}"), since=since)
    receipt = done.body.split("Bordereau : ", 1)[1].splitlines()[0]
    sent = await paul.wait_for_file(room, bot)  # the partner receives the receipt too
    assert sent.body == receipt.rpartition("/")[2]
    text = " ".join(PdfReader(io.BytesIO(await paul.download_file(sent))).pages[0].extract_text().split())
    assert f"{paul.user_id}" in text and "favorable, vu par l’agglo" in text
