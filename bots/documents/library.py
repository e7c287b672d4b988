"""@documents commands on a room's folder: list, search, fetch, rename, trash, restore, info, versions.

Every name an agent types is resolved inside the room's own folder (never
outside it: no ``..``, absolute path, encoded separator or control character),
and deleted documents go to a trash folder from which they can be restored.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from mautrix.types import MessageEvent

from maillage.bots.documents.bot import DocumentsBot, documents_commands
from maillage.bots.documents.extract import fold
from maillage.bots.documents.naming import base_of, slugify, split_extension, with_version
from maillage.bots.documents.webdav import Entry, WebDavError
from maillage.bots.runtime.commands import Argument, CommandError
from maillage.i18n import t

TRASH = ".corbeille"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_LISTED = 50


def resolve(folder: str, name: str) -> str:
    """``name`` (a file or sub-folder the agent typed) as a path inside ``folder``."""
    if not name or "%" in name or "\\" in name or name.startswith("/") or len(name) > 300 \
            or any(unicodedata.category(c) == "Cc" for c in name):
        raise CommandError(t("doc.name_invalid", value=name[:60]))
    parts = [p for p in name.strip().split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or not _SAFE_NAME.match(p) for p in parts):
        raise CommandError(t("doc.name_invalid", value=name[:60]))
    return "/".join([folder, *parts])


async def bound_folder(bot: DocumentsBot, event: MessageEvent) -> str:
    return await bot.bindings.required(event.room_id)


async def existing(bot: DocumentsBot, path: str, name: str) -> Entry:
    if not await only_real_folders_on_the_way(bot, path):
        raise CommandError(t("doc.no_such_document", name=name))
    entry = await bot.dav.entry(path)
    if entry is None or entry.is_folder:
        raise CommandError(t("doc.no_such_document", name=name))
    return entry


async def only_real_folders_on_the_way(bot: DocumentsBot, path: str) -> bool:
    """Every folder above ``path`` is a folder of its own. WsgiDAV refuses a symbolic link
    itself but follows one met on the way when it points inside its root — into another
    room's folder, say — so each one is asked about (one PROPFIND per level)."""
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        entry = await bot.dav.entry("/".join(parts[:depth]) + "/")
        if entry is None or not entry.is_folder:
            return False
    return True


async def move_once(bot: DocumentsBot, event: MessageEvent, source: str, target: str) -> None:
    """Move a document, marked first with the command's event id (properties travel with it),
    so that a replay after a crash between the move and the answer finds it moved."""
    await bot.dav.set_properties(source, {"commande": event.event_id})
    await bot.dav.move(source, target)


async def moved_before(bot: DocumentsBot, event: MessageEvent, targets: list[str] | None, *,
                       within: str | None = None) -> Entry | None:
    """On a replay only: the document an earlier attempt at this command moved (to one of
    ``targets``, or anywhere in the folder ``within``), found by the event id it carries."""
    if not bot.is_replay(event):
        return None
    try:
        if within is not None:
            candidates = await bot.dav.listing(within)
        else:
            candidates = [entry for path in targets or [] if (entry := await bot.dav.entry(path)) is not None]
    except WebDavError as error:
        if error.absent:
            return None
        raise
    return next((e for e in candidates if not e.is_folder and e.properties.get("commande") == event.event_id), None)


def visible(entry: Entry) -> bool:
    return not entry.name.startswith(".")


def _size(octets: int) -> str:
    for unit in ("o", "Ko", "Mo", "Go"):
        if octets < 1024 or unit == "Go":
            return f"{octets:.0f} {unit}" if unit == "o" else f"{octets:.1f} {unit}".replace(".", ",")
        octets /= 1024  # type: ignore[assignment]
    return ""


@documents_commands.subcommand("liste", "list", help="les documents du dossier (ou d’un sous-dossier)",
                               example="!doc liste", arguments=(Argument("sous-dossier", "", required=False),))
async def list_documents(bot: DocumentsBot, event: MessageEvent, **arguments: str) -> None:
    folder = await bound_folder(bot, event)
    path = resolve(folder, arguments["sous-dossier"]) if "sous-dossier" in arguments else folder
    if not await only_real_folders_on_the_way(bot, path + "/"):
        raise CommandError(t("doc.empty", folder=path))
    try:
        entries = [e for e in await bot.dav.listing(path + "/") if e.path.rstrip("/") != path and visible(e)]
    except WebDavError as exc:
        if exc.absent:
            raise CommandError(t("doc.empty", folder=path)) from None
        raise
    if not entries:
        await bot.reply(event, t("doc.empty", folder=path))
        return
    lines = [t("doc.listing", folder=path, count=len(entries))]
    for entry in sorted(entries, key=lambda e: (not e.is_folder, e.name))[:MAX_LISTED]:
        lines.append(f"  {entry.name}/" if entry.is_folder else f"  {entry.name} ({_size(entry.size)})")
    await bot.reply(event, "\n".join(lines))


@documents_commands.subcommand("cherche", "search",
                               help="chercher par mots dans les noms, les propriétés et le texte (PDF, ODT, DOCX)",
                               example="!doc cherche permis dupont",
                               arguments=(Argument("mots", "mots à chercher", rest=True),))
async def search(bot: DocumentsBot, event: MessageEvent, mots: str) -> None:
    folder = await bound_folder(bot, event)
    words = fold(mots).split()
    if not words:
        raise CommandError(t("doc.search_words"))
    lines = []
    try:
        # a link on the way would be followed, into the folder it points to
        real = await only_real_folders_on_the_way(bot, folder + "/")
        entries = await bot.dav.listing(folder + "/", depth="infinity") if real else []
    except WebDavError as exc:
        if not exc.absent:  # absent: nothing filed yet
            raise
        entries = []
    for entry in entries:
        if entry.is_folder or f"/{TRASH}/" in f"/{entry.path}" or not visible(entry):
            continue
        names = fold(entry.path + " " + entry.properties.get("original", ""))
        missing = [word for word in words if word not in names]
        relative = entry.path[len(folder) + 1:]
        if not missing:
            lines.append(f"  {relative}")
            continue
        text, folded = await bot.text_of(entry.properties["sha256"]) if "sha256" in entry.properties else ("", "")
        if text and all(word in folded for word in missing):
            lines.append(f"  {relative}\n    {t('doc.search_in_text', extract=excerpt(text, folded, missing[0]))}")
    if not lines:
        await bot.reply(event, t("doc.search_none", words=mots))
        return
    await bot.reply(event, "\n".join([t("doc.search_found", count=len(lines)), *lines[:MAX_LISTED]]))


def excerpt(text: str, folded: str, word: str, around: int = 60) -> str:
    """The words around the first occurrence of ``word``, not cutting words at either end."""
    at = folded.find(word)
    start, end = max(0, at - around), min(len(text), at + len(word) + around)
    if start > 0:
        space = text.find(" ", start, at)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", at + len(word), end)
        end = space if space != -1 else end
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


@documents_commands.subcommand("infos", "info", help="taille, versions, auteur, date et empreinte d’un document",
                               example="!doc infos 2026-11-22_urbanisme_plan.pdf",
                               arguments=(Argument("nom", "nom du document", rest=True),))
async def info(bot: DocumentsBot, event: MessageEvent, nom: str) -> None:
    folder = await bound_folder(bot, event)
    entry = await existing(bot, resolve(folder, nom), nom)
    versions = await versions_of(bot, entry.path)
    await bot.reply(event, t("doc.info", name=nom, size=_size(entry.size), versions=len(versions),
                             uploader=entry.properties.get("uploader", "?"), modified=entry.modified,
                             sha256=entry.properties.get("sha256", "?"),
                             original=entry.properties.get("original", "?")))


async def versions_of(bot: DocumentsBot, path: str) -> list[Entry]:
    folder, _, name = path.rpartition("/")
    base = base_of(name)[0]
    entries = await bot.dav.listing(folder + "/")
    return sorted((e for e in entries if not e.is_folder and base_of(e.name)[0] == base),
                  key=lambda e: base_of(e.name)[1])


@documents_commands.subcommand("versions", help="les versions d’un document",
                               example="!doc versions 2026-11-22_urbanisme_plan.pdf",
                               arguments=(Argument("nom", "nom du document", rest=True),))
async def versions(bot: DocumentsBot, event: MessageEvent, nom: str) -> None:
    folder = await bound_folder(bot, event)
    entry = await existing(bot, resolve(folder, nom), nom)
    found = await versions_of(bot, entry.path)
    lines = [t("doc.versions", name=base_of(entry.name)[0], count=len(found))]
    lines += [f"  v{base_of(e.name)[1]} : {e.name} ({_size(e.size)}, {e.properties.get('uploader', '?')})"
              for e in found]
    await bot.reply(event, "\n".join(lines))


@documents_commands.subcommand("renomme", "rename", help="renommer un document (le nom suit la convention)",
                               example="!doc renomme plan.pdf plan-definitif",
                               arguments=(Argument("nom", "nom actuel"), Argument("nouveau", "nouveau nom", rest=True)))
async def rename(bot: DocumentsBot, event: MessageEvent, nom: str, nouveau: str) -> None:
    folder = await bound_folder(bot, event)
    source = resolve(folder, nom)
    stem, extension = split_extension(nouveau)
    slug = slugify(stem)
    if not slug:
        raise CommandError(t("doc.name_invalid", value=nouveau[:60]))
    _, old_extension = split_extension(source.rpartition("/")[2])
    target_name = f"{slug}.{extension or old_extension}" if (extension or old_extension) else slug
    target = f"{source.rpartition('/')[0]}/{target_name}"
    if not await moved_before(bot, event, [target]):
        await existing(bot, source, nom)
        if await bot.dav.exists(target):
            raise CommandError(t("doc.exists", name=target_name))
        await move_once(bot, event, source, target)
    await bot.reply(event, t("doc.renamed", old=nom, new=target_name))


@documents_commands.subcommand("supprime", "delete", help="mettre un document à la corbeille (restaurable)",
                               example="!doc supprime 2026-11-22_urbanisme_plan.pdf",
                               arguments=(Argument("nom", "nom du document", rest=True),))
async def delete(bot: DocumentsBot, event: MessageEvent, nom: str) -> None:
    folder = await bound_folder(bot, event)
    source = resolve(folder, nom)
    done = await moved_before(bot, event, None, within=f"{folder}/{TRASH}/")
    if done is not None:
        await bot.reply(event, t("doc.trashed", name=nom, trashed=done.name))
        return
    await existing(bot, source, nom)
    await bot.dav.make_folders(f"{folder}/{TRASH}")
    name = source.rpartition("/")[2]
    version = 1
    while await bot.dav.exists(f"{folder}/{TRASH}/{with_version(name, version)}"):
        version += 1
    trashed = with_version(name, version)
    await move_once(bot, event, source, f"{folder}/{TRASH}/{trashed}")
    await bot.reply(event, t("doc.trashed", name=nom, trashed=trashed))


@documents_commands.subcommand("restaure", "restore", help="sortir un document de la corbeille",
                               example="!doc restaure 2026-11-22_urbanisme_plan.pdf",
                               arguments=(Argument("nom", "nom dans la corbeille", rest=True),))
async def restore(bot: DocumentsBot, event: MessageEvent, nom: str) -> None:
    folder = await bound_folder(bot, event)
    source = resolve(f"{folder}/{TRASH}", nom)
    target = f"{folder}/{source.rpartition('/')[2]}"
    if not await moved_before(bot, event, [target]):
        await existing(bot, source, nom)
        if await bot.dav.exists(target):
            raise CommandError(t("doc.exists", name=target.rpartition("/")[2]))
        await move_once(bot, event, source, target)
    await bot.reply(event, t("doc.restored", name=nom))


@documents_commands.subcommand("envoie", "send", help="reposter un document dans le salon (chiffré si le salon l’est)",
                               example="!doc envoie 2026-11-22_urbanisme_plan.pdf",
                               arguments=(Argument("nom", "nom du document", rest=True),))
async def send(bot: DocumentsBot, event: MessageEvent, nom: str) -> None:
    folder = await bound_folder(bot, event)
    entry = await existing(bot, resolve(folder, nom), nom)
    mimetype = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    await bot.send_file(event, bot.dav.get_stream(entry.path), size=entry.size, filename=entry.name,
                        mimetype=mimetype)
