"""Symbolic links put on the documents server by hand never lead a room into another room's folder.

WsgiDAV (``follow_symlinks`` off) refuses a link itself and leaves links out of its
listings, but follows a link met *on the way* to a path when it points inside its
root. So a room's bound folder, or a folder above it, replaced by a link after
binding would otherwise lead the room's commands and filed documents into the
folder the link points to.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bots.test_documents import bound_room, filed, post_file
from tests.bots.test_runtime import _bot_answer, documents_id
from tests.conftest import ServerStack
from tests.harness.matrix import AgentFactory


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (links not followed), with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and not p.is_symlink()}


# (the other room's folder, this room's folder, the folder replaced by a link, where it points)
LAYOUTS = {
    "the bound folder itself": ("remplace/rh", "remplace/accueil", "remplace/accueil", "remplace/rh"),
    "a folder on the way": ("chemin/rh/courrier", "chemin/accueil/courrier", "chemin/accueil", "chemin/rh"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
async def test_a_bound_folder_replaced_by_a_link_does_not_lead_into_another_room_s_folder(
    layout: str, synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    other_folder, own_folder, replaced, target = LAYOUTS[layout]
    root = synapse.config.data_dir / "webdav" / "fichiers"
    neighbour, other = await bound_room(agents, synapse, other_folder)
    since = len(neighbour.received)
    await post_file(neighbour, other, b"%PDF-1.7 salaires confidentiels", "Salaires.pdf")
    secret = (await filed(neighbour, other, synapse, since)).rsplit("/", 1)[1]
    since = len(neighbour.received)
    await post_file(neighbour, other, b"%PDF-1.7 ancienne paie", "Paie.pdf")
    trashed = (await filed(neighbour, other, synapse, since)).rsplit("/", 1)[1]
    assert "corbeille" in await _bot_answer(neighbour, other, synapse, f"!doc supprime {trashed}")

    owner, room = await bound_room(agents, synapse, own_folder)
    since = len(owner.received)
    await post_file(owner, room, b"%PDF-1.7 horaires", "Horaires.pdf")
    await filed(owner, room, synapse, since)

    # By hand, on the server, after binding: the folder becomes a link to the other room's one.
    shutil.rmtree(root / replaced)
    (root / replaced).symlink_to(root / target, target_is_directory=True)
    before = files_under(root / other_folder)
    assert secret in before and f".corbeille/{trashed}" in before

    listing = await _bot_answer(owner, room, synapse, "!doc liste")
    assert secret not in listing and "est vide" in listing
    assert "Aucun document" in await _bot_answer(owner, room, synapse, "!doc cherche salaires")
    for command in (f"infos {secret}", f"envoie {secret}", f"versions {secret}", f"supprime {secret}",
                    f"renomme {secret} a-moi", f"restaure {trashed}"):
        answer = await _bot_answer(owner, room, synapse, f"!doc {command}")
        assert "Aucun document" in answer, (command, answer)
    assert not [f for r, f in owner.files if r == room and f.sender == documents_id(synapse)]  # nothing sent back

    since = len(owner.received)
    await post_file(owner, room, b"%PDF-1.7 nouveau", "Nouveau.pdf")
    told = await owner.wait_for_text(room, lambda m: m.sender == documents_id(synapse), since=since, timeout=60)
    assert "refuse le dossier" in told.body and "gardé" in told.body, told.body
    assert files_under(root / other_folder) == before  # nothing read, written, moved or deleted there


async def test_a_link_to_a_single_file_is_neither_listed_sent_renamed_nor_found(
    synapse: ServerStack, webdav: str, bots: str, agents: AgentFactory
) -> None:
    root = synapse.config.data_dir / "webdav" / "fichiers"
    neighbour, other = await bound_room(agents, synapse, "lienfichier/rh")
    since = len(neighbour.received)
    await post_file(neighbour, other, b"%PDF-1.7 salaires confidentiels", "Salaires.pdf")
    secret = (await filed(neighbour, other, synapse, since)).rsplit("/", 1)[1]
    owner, room = await bound_room(agents, synapse, "lienfichier/accueil")
    since = len(owner.received)
    await post_file(owner, room, b"%PDF-1.7 horaires", "Horaires.pdf")
    own = (await filed(owner, room, synapse, since)).rsplit("/", 1)[1]

    link = root / "lienfichier" / "accueil" / "salaires-copie.pdf"
    link.symlink_to(root / "lienfichier" / "rh" / secret)

    listing = await _bot_answer(owner, room, synapse, "!doc liste")
    assert own in listing and "salaires-copie" not in listing and "(1 éléments)" in listing, listing
    assert "Aucun document" in await _bot_answer(owner, room, synapse, "!doc cherche salaires")
    assert "Aucun document" in await _bot_answer(owner, room, synapse, "!doc cherche copie")
    for command in ("infos salaires-copie.pdf", "envoie salaires-copie.pdf", "versions salaires-copie.pdf",
                    "renomme salaires-copie.pdf a-moi", "supprime salaires-copie.pdf"):
        answer = await _bot_answer(owner, room, synapse, f"!doc {command}")
        assert "Aucun document" in answer, (command, answer)
    assert not [f for r, f in owner.files if r == room and f.sender == documents_id(synapse)]
    assert link.is_symlink() and (root / "lienfichier" / "rh" / secret).read_bytes().endswith(b"confidentiels")
    assert not (root / "lienfichier" / "accueil" / "a-moi.pdf").exists()
