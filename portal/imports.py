"""CSV import of agents: checked whole (a preview), then applied row by row in the background.

The file is what an HR export or a spreadsheet gives: UTF-8 (with or without BOM) or
Windows-1252 (Excel's « CSV (séparateur : point-virgule) »), `;` or `,` between columns,
French or English headers. Nothing is applied while any row is wrong: the preview lists
each error by line and column. Rows already in the portal are left as they are, so a file
run again creates only what is missing. The import's rows are kept in the database; an
import cut by a crash is taken up again at the portal's next start, an account already made
for a row in progress being taken over rather than made twice.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select, update

from maillage.i18n import t
from maillage.portal.db import Agent, Database, ImportJob, ImportRow, Service
from maillage.portal.errors import OrganisationError
from maillage.portal.organisation import NewAgent, Organisation

logger = logging.getLogger(__name__)
MAX_BYTES = 2_000_000
MAX_ROWS = 10_000
CONCURRENCY = 8
HEADERS = {  # the column, and the headers that name it
    "email": ("email", "e-mail", "courriel", "adresse électronique", "adresse"),
    "prenom": ("prenom", "prénom", "given_name", "given name", "first name"),
    "nom": ("nom", "nom d'usage", "nom d’usage", "usual_name", "usual name", "last name"),
    "service": ("service",),
    "role": ("role", "rôle"),
}
REQUIRED = ("email", "prenom", "nom", "service")


class ImportFileError(Exception):
    """The file as a whole cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class RowError:
    line: int
    column: str
    message: str


@dataclass
class Preview:
    file_name: str
    encoding: str
    new: list[tuple[int, NewAgent]] = field(default_factory=list)
    present: list[tuple[int, NewAgent]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def decode(data: bytes) -> tuple[str, str]:
    if len(data) > MAX_BYTES:
        raise ImportFileError(t("import.too_big", megabytes=MAX_BYTES // 1_000_000))
    if b"\x00" in data:
        raise ImportFileError(t("import.not_text"))
    try:
        return data.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        raise ImportFileError(t("import.not_text")) from None


def read_rows(text: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The column of each field, and the rows with their line numbers (the header is line 1)."""
    sample = text[:4096]
    delimiter = ";" if sample.count(";") >= sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(t("import.empty")) from None
    except csv.Error:
        raise ImportFileError(t("import.not_csv")) from None
    names = [cell.strip().lower() for cell in header]
    columns = {}
    for key, aliases in HEADERS.items():
        for index, name in enumerate(names):
            if name in aliases:
                columns[key] = index
                break
    missing = [key for key in REQUIRED if key not in columns]
    if missing:
        raise ImportFileError(t("import.missing_columns", columns=", ".join(missing)))
    rows = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            rows.append((reader.line_num, cells))
            if len(rows) > MAX_ROWS:
                raise ImportFileError(t("import.too_many_rows", rows=MAX_ROWS))
    except csv.Error:
        raise ImportFileError(t("import.not_csv_at", line=reader.line_num)) from None
    if not rows:
        raise ImportFileError(t("import.empty"))
    return columns, rows


async def preview(organisation: Organisation, database: Database, file_name: str, data: bytes) -> Preview:
    """Every row checked, against the file itself and the portal; nothing written."""
    text, encoding = decode(data)
    columns, rows = read_rows(text)
    result = Preview(file_name, encoding)
    async with database.session() as session:
        services = set((await session.execute(select(Service.key).where(Service.archived.is_(False)))).scalars())
        known = {agent.email: agent for agent in (await session.execute(select(Agent))).scalars()}
    checked: list[tuple[int, NewAgent]] = []
    for line, cells in rows:
        def cell(key: str, cells: list[str] = cells) -> str:
            index = columns.get(key)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        try:
            agent = organisation.checked(NewAgent(cell("email"), cell("prenom"), cell("nom"), cell("service"),
                                                  cell("role") or "agent"))
        except OrganisationError as exc:
            result.errors.append(RowError(line, exc.field, exc.message))
            continue
        if agent.service_key not in services:
            result.errors.append(RowError(line, "service", t("import.unknown_service", service=agent.service_key)))
            continue
        checked.append((line, agent))
    twice = {email for email, count in Counter(agent.email for _, agent in checked).items() if count > 1}
    localparts = Counter(agent.email.split("@")[0] for _, agent in checked)
    for line, agent in checked:
        if agent.email in twice:
            result.errors.append(RowError(line, "email", t("import.duplicate", email=agent.email)))
        elif localparts[agent.email.split("@")[0]] > 1:
            result.errors.append(RowError(line, "email", t("import.same_identifier",
                                                            localpart=agent.email.split("@")[0])))
        elif agent.email in known:
            result.present.append((line, agent))
        elif any(a.user_id == organisation.user_id(agent.email.split("@")[0]) for a in known.values()):
            result.errors.append(RowError(line, "email", t("portal.agent_taken",
                                                            user_id=organisation.user_id(agent.email.split("@")[0]))))
        else:
            result.new.append((line, agent))
    result.errors.sort(key=lambda error: error.line)
    return result


async def write_down(database: Database, actor: str, checked: Preview) -> int:
    """The import written down (state « apercu »: its rows to make), until the admin confirms it."""
    async with database.session() as session:
        job = ImportJob(created_by=actor, file_name=checked.file_name[:255], total=len(checked.new), state="apercu")
        session.add(job)
        await session.flush()
        for line, agent in checked.new:
            session.add(ImportRow(job_id=job.id, line=line, email=agent.email, given_name=agent.given_name,
                                  usual_name=agent.usual_name, service_key=agent.service_key, role=agent.role))
        await session.commit()
        return job.id


async def confirm(database: Database, job_id: int, actor: str) -> bool:
    """The import confirmed by the admin who previewed it (once: a second click changes nothing)."""
    async with database.session() as session:
        changed = await session.execute(update(ImportJob).where(
            ImportJob.id == job_id, ImportJob.state == "apercu", ImportJob.created_by == actor
        ).values(state="en_cours"))
        await session.commit()
    return bool(changed.rowcount)  # type: ignore[attr-defined]


async def restart_interrupted(database: Database, job_id: int) -> bool:
    """An interrupted import started again (its rows done stay done)."""
    async with database.session() as session:
        changed = await session.execute(update(ImportJob).where(
            ImportJob.id == job_id, ImportJob.state == "interrompu").values(state="en_cours", message=""))
        await session.commit()
    return bool(changed.rowcount)  # type: ignore[attr-defined]


async def run(organisation: Organisation, database: Database, job_id: int) -> None:
    """Every row not done yet, a few at a time; the job marked done at the end."""
    async with database.session() as session:
        job = await session.get(ImportJob, job_id)
        rows = list((await session.execute(select(ImportRow).where(
            ImportRow.job_id == job_id, ImportRow.state.in_(("a_faire", "en_cours"))).order_by(ImportRow.line))
        ).scalars())
    assert job is not None
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(row: ImportRow) -> None:
        async with gate:
            if row.state == "en_cours" and await _made(database, row.email):  # cut after its agent was saved
                await _set_row(database, row, "fait")
                return
            resumed = row.state == "en_cours"
            await _set_row(database, row, "en_cours")
            agent = NewAgent(row.email, row.given_name, row.usual_name, row.service_key, row.role)
            try:
                created = await organisation.create_agent(job.created_by, agent, adopt=resumed)
            except OrganisationError as exc:
                await _set_row(database, row, "erreur", exc.message)
                return
            await _set_row(database, row, "fait", first_password=created.first_password)

    try:
        await asyncio.gather(*(one(row) for row in rows))
    except Exception as exc:  # a server gone, a bug: the admin is told and can start it again
        logger.exception("import %s interrupted", job_id)
        await _end(database, job_id, "interrompu", t("import.interrupted", detail=type(exc).__name__))
        return
    await _end(database, job_id, "termine", "")


async def _end(database: Database, job_id: int, state: str, message: str) -> None:
    async with database.session() as session:
        await session.execute(update(ImportJob).where(ImportJob.id == job_id).values(state=state, message=message))
        await session.commit()


async def _made(database: Database, email: str) -> bool:
    async with database.session() as session:
        return (await session.execute(select(Agent.id).where(Agent.email == email))).first() is not None


async def _set_row(database: Database, row: ImportRow, state: str, message: str = "",
                   first_password: str = "") -> None:
    async with database.session() as session:
        await session.execute(update(ImportRow).where(ImportRow.job_id == row.job_id, ImportRow.line == row.line)
                              .values(state=state, message=message, first_password=first_password))
        await session.commit()
    row.state = state


async def unfinished(database: Database) -> list[int]:
    async with database.session() as session:
        return list((await session.execute(select(ImportJob.id).where(ImportJob.state == "en_cours"))).scalars())


@dataclass(frozen=True)
class Progress:
    job: ImportJob
    done: int
    failed: list[ImportRow]


async def progress(database: Database, job_id: int) -> Progress | None:
    async with database.session() as session:
        job = await session.get(ImportJob, job_id)
        if job is None:
            return None
        done = (await session.execute(select(func.count()).select_from(ImportRow).where(
            ImportRow.job_id == job_id, ImportRow.state.in_(("fait", "erreur"))))).scalar_one()
        failed = list((await session.execute(select(ImportRow).where(
            ImportRow.job_id == job_id, ImportRow.state == "erreur").order_by(ImportRow.line))).scalars())
    return Progress(job, int(done), failed)


async def take_first_passwords(database: Database, job_id: int) -> list[tuple[str, str]]:
    """The rows' first passwords (development provider), given once: erased as they are read."""
    async with database.session() as session:
        rows = (await session.execute(select(ImportRow).where(ImportRow.job_id == job_id,
                                                              ImportRow.first_password != ""))).scalars().all()
        found = [(row.email, row.first_password) for row in rows]
        await session.execute(update(ImportRow).where(ImportRow.job_id == job_id).values(first_password=""))
        await session.commit()
    return found
