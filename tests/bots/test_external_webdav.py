"""@documents on another WebDAV server, as with Nextcloud: a base URL with a path, other
credentials. An independent client sees the files; wrong credentials are told, not retried."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from webdav3.client import Client as WebDavClient

from maillage.deploy.services import HealthCheck, Service
from maillage.secretstore import update_secrets
from tests.bots.test_documents import bound_room, filed, post_file
from tests.bots.test_runtime import _bot_answer, documents_id
from tests.conftest import ServerStack, ServiceProcess, standalone_stack
from tests.harness.matrix import AgentFactory
from tests.harness.servers import free_port, running

PREFIX = "remote.php/dav/files/mairie"
USER, PASSWORD = "robot-mairie", "Mot-de-passe-Nextcloud-7f3a"


def nextcloud_like(directory: Path, port: int) -> Service:
    """A WsgiDAV serving only under a Nextcloud-style path, with its own account."""
    url = f"http://127.0.0.1:{port}/{PREFIX}/"

    def prepare() -> None:
        (directory / "fichiers").mkdir(parents=True, exist_ok=True)
        (directory / "wsgidav.yaml").write_text(yaml.safe_dump({
            "host": "127.0.0.1", "port": port, "server": "cheroot",
            "provider_mapping": {f"/{PREFIX}": str(directory / "fichiers")},
            "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                                   "default_to_digest": False},
            "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            "property_manager": {"class": "wsgidav.prop_man.property_manager.ShelvePropertyManager",
                                 "kwargs": {"storage_path": str(directory / "proprietes.shelve")}},
            "lock_storage": True, "verbose": 1}))

    settings = str(directory / "wsgidav.yaml")
    return Service(name="nextcloud", label="WebDAV externe",
                   argv=[sys.executable, "-m", "wsgidav.server.server_cli", "--config", settings],
                   url=url, health=HealthCheck(url=url, method="PROPFIND", auth=(USER, PASSWORD), ok_status=(207,),
                                               headers={"Depth": "0"}),
                   port=port, port_key="-", prepare=prepare)


@pytest.fixture
def external(tmp_path: Path) -> Iterator[tuple[ServerStack, ServiceProcess, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/{PREFIX}/"
    with standalone_stack(tmp_path / "pile", webdav={"url": url, "utilisateur": USER}) as (stack, _, bots), \
            running(tmp_path / "nextcloud", nextcloud_like(tmp_path / "nextcloud", port)):
        update_secrets(stack.config.data_dir, dav_password=PASSWORD)
        bots.start()
        yield stack, bots, url


async def test_documents_go_to_a_nextcloud_style_server_with_its_own_credentials(
    external: tuple[ServerStack, ServiceProcess, str], own_agents: AgentFactory
) -> None:
    stack, _, url = external
    owner, room = await bound_room(own_agents, stack, "greffe/deliberations")
    since = len(owner.received)
    await post_file(owner, room, b"%PDF-1.7 deliberation 2026-42", "Délibération 42.pdf")
    path = await filed(owner, room, stack, since)

    independent = WebDavClient({"webdav_hostname": url, "webdav_login": USER, "webdav_password": PASSWORD})
    stored = io.BytesIO()
    independent.download_from(stored, path)
    assert stored.getvalue() == b"%PDF-1.7 deliberation 2026-42"
    name = path.rsplit("/", 1)[1]
    assert name in await _bot_answer(owner, room, stack, "!doc liste")  # hrefs under the base path
    assert owner.user_id in await _bot_answer(owner, room, stack, f"!doc infos {name}")


async def test_credentials_the_server_refuses_are_told_at_once_and_never_shown(
    external: tuple[ServerStack, ServiceProcess, str], own_agents: AgentFactory
) -> None:
    stack, bots, url = external
    owner, room = await bound_room(own_agents, stack, "greffe/registre")
    bots.stop()
    update_secrets(stack.config.data_dir, dav_password="Ancien-mot-de-passe-1")
    bots.start()

    since = len(owner.received)
    await post_file(owner, room, b"registre", "Registre.pdf")
    told = await owner.wait_for_text(room, lambda m: m.sender == documents_id(stack), since=since)
    assert "refuse l’accès au robot" in told.body and "nouvel essai" not in told.body
    listing = await _bot_answer(owner, room, stack, "!doc liste")
    assert "refuse l’accès au robot" in listing
    independent = WebDavClient({"webdav_hostname": url, "webdav_login": USER, "webdav_password": PASSWORD})
    assert independent.list("greffe/registre/") == ["registre/"]  # only the folder itself: nothing filed
    log = (stack.config.data_dir / "logs" / "bots.log").read_text()
    assert "Ancien-mot-de-passe-1" not in log and PASSWORD not in log

    # The document was kept, not dropped: filed once the administrator puts the right password back.
    bots.stop()
    update_secrets(stack.config.data_dir, dav_password=PASSWORD)
    bots.start()
    path = await filed(owner, room, stack, since)
    assert path.startswith("greffe/registre/") and path.endswith("registre.pdf")
    stored = io.BytesIO()
    independent.download_from(stored, path)
    assert stored.getvalue() == b"registre"
