"""What the bots' tests with a partner administration share: the mairie's bots running on
the federation's first homeserver, a room shared with the partner, a command and its answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from maillage.deploy.services import bots_service, caldav_service, webdav_service
from maillage.secretstore import load_secrets
from tests.conftest import ServiceProcess
from tests.harness.federation import Federation, Homeserver
from tests.harness.matrix import Agent, AgentFactory, create_encrypted_room
from tests.harness.servers import running

AgentsOn = Callable[[Homeserver], AgentFactory]


@contextmanager
def mairie_bots(federation: Federation) -> Iterator[None]:
    """Radicale, WsgiDAV and the bots of the mairie's homeserver, running."""
    config = federation.mairie.config
    assert config is not None
    secrets = load_secrets(config.data_dir)
    with running(config.data_dir, caldav_service(config, secrets)), \
            running(config.data_dir, webdav_service(config, secrets)):
        process = ServiceProcess(config, bots_service)
        process.start()
        yield
        process.stop()


async def said(agent: Agent, room: str, bot: str, command: str) -> str:
    """The bot's reply to ``command``: not what it says meanwhile (another member's answer that
    this agent's client happens to see later, a reminder)."""
    since = len(agent.received)
    sent = await agent.send_text(room, command)
    return (await agent.wait_for_text(room, lambda m: m.sender == bot and m.reply_to == sent, since=since,
                                      timeout=60)).body


async def shared_room(claire: Agent, bot: str, *others: Agent, access: str, name: str) -> str:
    """An encrypted room of that access kind, the bot in it at the moderator level its binding needs."""
    room = await create_encrypted_room(claire, *others, access=access, name=name)
    levels = await claire.client.room_get_state_event(room, "m.room.power_levels")
    await claire.client.room_put_state(room, "m.room.power_levels", {
        **levels.content, "users": {**levels.content["users"], bot: 50}})
    await claire.client.room_invite(room, bot)
    await claire.wait_for_members_including(room, bot)
    return room
