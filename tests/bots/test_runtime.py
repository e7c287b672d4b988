"""The bot runtime as agents meet it: invitations, help, errors, in encrypted rooms."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from maillage.bots.runtime.bot import BotRuntime
from maillage.bots.runtime.metrics import Metrics
from maillage.bots.runtime.sync import TIMELINE_LIMIT
from maillage.secretstore import ensure_secrets
from tests.conftest import BotProcess, ServerStack
from tests.harness.matrix import Agent, AgentFactory, Received, create_encrypted_room, wait_for_members
from tests.harness.servers import write_config


def documents_id(stack: ServerStack) -> str:
    return f"@documents:{stack.server_name}"


async def let_the_bot_bind(agent: Agent, room: str, stack: ServerStack) -> None:
    """Give @documents the moderator level it needs to write the room's binding state."""
    levels = await agent.client.room_get_state_event(room, "m.room.power_levels")
    users = {**levels.content["users"], documents_id(stack): 50}
    await agent.client.room_put_state(room, "m.room.power_levels", {**levels.content, "users": users})


async def bound_folder_of(agent: Agent, room: str) -> str | None:
    """The folder in the room's binding state, as any client reads it."""
    state = await agent.client.room_get_state_event(room, "fr.maillage.documents")
    folder = getattr(state, "content", {}).get("dossier")
    return str(folder) if folder else None


async def test_the_bot_joins_when_invited_and_answers_help_encrypted(
    synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    claire, room = await _room_with_bot(agents, synapse, "Urbanisme")

    await claire.send_text(room, "!aide")
    answer = await claire.wait_for_text(room, lambda m: m.sender == documents_id(synapse))
    assert answer.encrypted
    assert "!doc lier <dossier>" in answer.body
    assert "!doc, !documents" in answer.body


async def test_an_agent_who_joins_later_reads_the_bot_s_next_answers(
    synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    """The bot learns members lazily (sync filter): a newcomer must still get the room key."""
    claire, room = await _room_with_bot(agents, synapse, "Arrivées")
    await _bot_answer(claire, room, synapse, "!aide")  # the bot's session is shared with claire only
    newcomer = await agents("nouvelle")
    await claire.client.room_invite(room, newcomer.user_id)
    await newcomer.client.join(room)
    await wait_for_members(room, claire, newcomer)
    await newcomer.send_text(room, "!doc dossier")
    answer = await newcomer.wait_for_text(room, lambda m: m.sender == documents_id(synapse))
    assert answer.encrypted and "n’est lié à aucun dossier" in answer.body


async def test_a_wrong_command_gets_what_was_expected_with_an_example(
    synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    claire, room = await _room_with_bot(agents, synapse, "Services techniques")

    await claire.send_text(room, "!doc ranger")
    unknown = await claire.wait_for_text(room, lambda m: m.sender == documents_id(synapse))
    assert "Commande inconnue « ranger »" in unknown.body and "lier" in unknown.body

    since = len(claire.received)
    await claire.send_text(room, "!documents lier")
    missing = await claire.wait_for_text(room, lambda m: m.sender == documents_id(synapse), since=since)
    assert "Il manque « dossier »" in missing.body and "!doc lier urbanisme/permis-de-construire" in missing.body


async def test_health_and_metrics_are_served(bots: str) -> None:
    assert httpx.get(f"{bots}/sante").json() == {"pret": True, "serveur_matrix": "joignable"}
    assert "maillage_bot_commands_total" in httpx.get(f"{bots}/metrics").text


async def _room_with_bot(agents: AgentFactory, stack: ServerStack, name: str) -> tuple[Agent, str]:
    owner = await agents("proprietaire")
    room = await create_encrypted_room(owner, name=name)
    await owner.client.room_invite(room, documents_id(stack))
    await owner.wait_for_members_including(room, documents_id(stack))
    return owner, room


async def _bot_answer(agent: Agent, room: str, stack: ServerStack, command: str) -> str:
    since = len(agent.received)
    await agent.send_text(room, command)
    return (await agent.wait_for_text(room, lambda m: m.sender == documents_id(stack), since=since)).body


async def test_a_room_admin_binds_a_folder_as_room_state(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Permis")
    needs_power = await _bot_answer(owner, room, synapse, "!doc lier urbanisme/instruction")
    assert "donnez-lui le niveau « modérateur »" in needs_power
    assert not (synapse.config.data_dir / "webdav" / "fichiers" / "urbanisme" / "instruction").exists()

    await let_the_bot_bind(owner, room, synapse)
    bound = await _bot_answer(owner, room, synapse, "!doc lier Urbanisme/Permis de Construire")
    assert "« urbanisme/permis-de-construire »" in bound
    state = await owner.client.room_get_state_event(room, "fr.maillage.documents")
    assert state.content == {"dossier": "urbanisme/permis-de-construire"}

    colleague = await agents("collegue")
    await owner.client.room_invite(room, colleague.user_id)
    await colleague.client.join(room)
    await wait_for_members(room, owner, colleague)
    refused = await _bot_answer(colleague, room, synapse, "!doc délier")
    assert "Seul un administrateur du salon" in refused
    assert (await owner.client.room_get_state_event(room, "fr.maillage.documents")).content["dossier"]

    unbound = await _bot_answer(owner, room, synapse, "!doc délier")
    assert "n’est plus lié" in unbound
    assert "n’est lié à aucun dossier" in await _bot_answer(owner, room, synapse, "!doc dossier")


@pytest.mark.parametrize("folder", ["../finances", "/etc", "urbanisme/../../x", "a%2F..%2Fb", "dossier\\x",
                                    "x" * 250, "ok/\x07bell"])
async def test_a_folder_outside_the_tree_is_refused(
    folder: str, synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Chemins")
    answer = await _bot_answer(owner, room, synapse, f"!doc lier {folder}")
    assert "Nom de dossier refusé" in answer
    assert await bound_folder_of(owner, room) is None


async def test_commands_sent_while_the_bots_are_down_are_handled_once_in_order(
    synapse: ServerStack, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Reprise")
    await _bot_answer(owner, room, synapse, "!aide")  # the bot knows the room and its keys
    bot_process.stop()
    for word in ("premier", "deuxieme", "troisieme"):
        await owner.send_text(room, f"!doc {word}")
    bot_process.start()
    answers = []
    for word in ("premier", "deuxieme", "troisieme"):
        def answers_word(message: Received, word: str = word) -> bool:
            return message.sender == documents_id(synapse) and f"« {word} »" in message.body

        answers.append(await owner.wait_for_text(room, answers_word, timeout=60))
    assert [a.server_timestamp for a in answers] == sorted(a.server_timestamp for a in answers)

    bot_process.stop()  # a second restart must not answer them again
    bot_process.start()
    await _bot_answer(owner, room, synapse, "!doc quatrieme")
    replies = [m.body for m in owner.received if m.room_id == room and m.sender == documents_id(synapse)]
    for word in ("premier", "deuxieme", "troisieme", "quatrieme"):
        assert sum(f"« {word} »" in body for body in replies) == 1, replies


async def test_a_long_conversation_while_the_bots_are_down_loses_no_command(
    synapse: ServerStack, bot_process: BotProcess, bots: str, agents: AgentFactory
) -> None:
    """More messages than a sync gives per room (it then says `limited`): none is skipped."""
    owner, room = await _room_with_bot(agents, synapse, "Longue absence")
    await _bot_answer(owner, room, synapse, "!aide")
    bot_process.stop()
    commands = {0: "!doc ouverture", TIMELINE_LIMIT + 10: "!doc milieu", 2 * TIMELINE_LIMIT + 20: "!doc cloture"}
    for index in range(2 * TIMELINE_LIMIT + 21):
        await owner.send_text(room, commands.get(index, f"échange n° {index}"))
    bot_process.start()
    for word in ("ouverture", "milieu", "cloture"):
        def answers_word(message: Received, word: str = word) -> bool:
            return message.sender == documents_id(synapse) and f"« {word} »" in message.body

        await owner.wait_for_text(room, answers_word, timeout=60)
    answered = [m.body for m in owner.received if m.room_id == room and m.sender == documents_id(synapse)]
    order = [word for body in answered for word in ("ouverture", "milieu", "cloture") if f"« {word} »" in body]
    assert order == ["ouverture", "milieu", "cloture"]


async def test_the_bot_device_is_cross_signed_and_its_recovery_key_private(
    synapse: ServerStack, bots: str, agents: AgentFactory
) -> None:
    agent = await agents("verificatrice")
    bot = documents_id(synapse)
    response = httpx.post(f"{synapse.homeserver}/_matrix/client/v3/keys/query",
                          headers={"Authorization": f"Bearer {agent.client.access_token}"},
                          json={"device_keys": {bot: []}}).json()
    self_signing = response["self_signing_keys"][bot]["keys"]
    (self_signing_id,) = self_signing
    devices = response["device_keys"][bot]
    assert any(self_signing_id in device["signatures"][bot] for device in devices.values())
    recovery = synapse.config.data_dir / "secrets" / "bots" / "documents.cle-de-recuperation"
    assert oct(recovery.stat().st_mode & 0o777) == "0o600"


async def test_each_command_has_its_own_help(synapse: ServerStack, bots: str, agents: AgentFactory) -> None:
    owner, room = await _room_with_bot(agents, synapse, "Aide")
    overview = await _bot_answer(owner, room, synapse, "!doc aide")
    assert "!doc lier <dossier>" in overview and "!doc envoie <nom>" in overview
    one = await _bot_answer(owner, room, synapse, "!documents help bind")
    assert "Exemple : !doc lier urbanisme/permis-de-construire" in one and "lier, bind" in one
    unknown = await _bot_answer(owner, room, synapse, "!doc aide voler")
    assert "Commande inconnue « voler »" in unknown


def test_invitations_are_accepted_from_local_and_partner_servers_only(tmp_path: Path) -> None:
    """The federation allowlist already keeps other servers out; the bots check again."""
    (tmp_path / "cert.pem").write_text("-")  # never read: no server starts here
    (tmp_path / "cle.pem").write_text("-")
    config = write_config(tmp_path, federation={"partenaires": ["agglo.example.fr"], "certificat": "cert.pem",
                                                "cle": "cle.pem"})
    runtime = BotRuntime(config, ensure_secrets(config.data_dir), "jeton", [], Metrics())
    assert runtime._may_invite("@claire:localhost")
    assert runtime._may_invite("@paul:agglo.example.fr")
    assert not runtime._may_invite("@inconnu:prefecture.example.fr")
    assert not runtime._may_invite("@paul:agglo.example.fr.ailleurs.org")
    assert not runtime._may_invite("@paul:localhost.ailleurs.org")
