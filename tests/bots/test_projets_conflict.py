"""A task changed from the room while another app changes it: the bot's write waits (a proxy
holds it) while a Thunderbird-like client renames the task; the bot's ``If-Match`` then
fails, the other app's change stays, and the agent is told rather than silently winning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from maillage.deploy.services import caldav_service
from tests.bots.test_projets import project_room, projets_id, said, task_list, todos_of
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import AgentFactory
from tests.harness.proxy import DelayingProxy
from tests.harness.servers import free_port, running

pytestmark = pytest.mark.usefixtures("in_french")


@pytest.fixture
def proxy() -> Iterator[DelayingProxy]:
    held = DelayingProxy(free_port())
    yield held
    held.close()


@pytest.fixture
def external(tmp_path: Path, proxy: DelayingProxy) -> Iterator[tuple[ServerStack, ServiceProcess, str]]:
    """A stack whose bots reach Radicale through the proxy; the test's own client goes straight."""
    with standalone_stack(tmp_path / "pile", reseau={"port_caldav": proxy.target_port},
                          caldav={"url": proxy.url + "/maillage/"}) as (stack, _, bots), \
            running(stack.config.data_dir, caldav_service(stack.config, stack.secrets)):
        bots.start()
        yield stack, bots, f"http://127.0.0.1:{proxy.target_port}/"


async def test_a_change_from_the_room_racing_another_app_keeps_the_other_change_and_tells_the_agent(
    external: tuple[ServerStack, ServiceProcess, str], own_agents: AgentFactory, proxy: DelayingProxy
) -> None:
    stack, _, caldav = external
    owner, room = await project_room(own_agents, stack, "Fête de la musique")
    await said(owner, room, stack, "!projet créer fete-musique")
    await said(owner, room, stack, "!tâche ajoute Réserver la salle")

    proxy.delay(b"PUT ")
    since = len(owner.received)
    await owner.send_text(room, "!tâche fait 1")
    assert await asyncio.to_thread(proxy.arrived.wait, 60), "the bot never wrote the task"
    item = next(i for i in task_list(stack, caldav, "fete-musique").todos() if "Réserver" in i.data)
    item.data = item.data.replace("SUMMARY:Réserver la salle", "SUMMARY:Réserver la salle des fêtes")
    await asyncio.to_thread(item.save)  # Thunderbird's rename reaches the server first
    proxy.let_go()

    told = await owner.wait_for_text(room, lambda m: m.sender == projets_id(stack) and "vient d’être" in m.body,
                                     since=since, timeout=60)
    assert told.body == ("La tâche n°1 vient d’être modifiée par quelqu’un d’autre : rien n’a été changé."
                         " Regardez « !tâche détails 1 » puis recommencez.")
    stored = await asyncio.to_thread(todos_of, stack, caldav, "fete-musique")
    assert list(stored) == ["Réserver la salle des fêtes"]  # the other app's change kept
    assert str(stored["Réserver la salle des fêtes"]["status"]) == "NEEDS-ACTION"  # nothing half-done
    since = len(owner.received)
    await owner.send_text(room, "!tâche fait 1")  # done again, on what is there now
    done = await owner.wait_for_text(room, lambda m: m.sender == projets_id(stack) and m.body.startswith("Faite"),
                                     since=since, timeout=60)
    assert done.body.startswith("Faite : n°1 — Réserver la salle des fêtes")
