"""The ``maillage`` command: init, up, down, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tomllib
from pathlib import Path
from typing import NoReturn

from maillage.config import (
    CONFIG_FILENAME,
    PROFILES,
    Config,
    ConfigError,
    config_path,
    load_config,
    parse_config,
    render_config_template,
    with_profile,
)
from maillage.deploy import launcher
from maillage.deploy.backup import BackupError, back_up, prune, restore
from maillage.deploy.migrate import MigrationError, migrate_to_postgresql, set_scaled_profile
from maillage.deploy.partners import PartnerError, change_partners
from maillage.deploy.recipes import RecipeError, write_recipes
from maillage.deploy.services import PrepareError, stack_services
from maillage.i18n import catalogue, current_language, set_language, t
from maillage.secretstore import SecretsError, ensure_secrets, private_umask

EXIT_USAGE = 2

DEMO_NAME = "Mairie de Bourg-Vallon (démonstration)"
DEMO_SERVER_NAME = "localhost"


class _Parser(argparse.ArgumentParser):
    """argparse speaking the user's language: its own messages (« usage: », « invalid
    choice »…) through the catalogue, and every mistake ending on what to do."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, t("cli.usage_error", prog=self.prog, message=message) + "\n")


def _argparse_text(message: str) -> str:
    """argparse's English message in the current language (itself when not in the catalogue)."""
    return catalogue(current_language()).get(f"argparse.{message}", message)


def _argparse_plural(singular: str, plural: str, count: int) -> str:
    return _argparse_text(singular if count == 1 else plural)


# argparse looks its messages up through these two module globals (gettext's functions, bound
# when it is imported) at the moment it writes them.
argparse._ = _argparse_text  # type: ignore[attr-defined]
argparse.ngettext = _argparse_plural  # type: ignore[attr-defined]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maillage", description=t("cli.description"))
    parser.add_argument("-c", "--config", help=t("cli.config"))
    parser.add_argument("-d", "--data-dir", help=t("cli.data_dir"))
    parser.add_argument("--profil", "--profile", dest="profile", choices=sorted(PROFILES), help=t("cli.profile"))
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help=t("cli.init"))
    init.add_argument("--nom", default=DEMO_NAME, help=t("cli.init.name"))
    init.add_argument("--nom-serveur", default=DEMO_SERVER_NAME, help=t("cli.init.server_name"))
    init.add_argument("--demo", action="store_true", help=t("cli.init.demo"))

    up = commands.add_parser("up", help=t("cli.up"))
    up.add_argument("--detach", action="store_true", help=t("cli.up.detach"))
    up.add_argument("--with-neighbour", "--avec-voisin", action="store_true", help=t("cli.up.neighbour"))
    up.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--profil", "--profile", dest="up_profile", choices=sorted(PROFILES), help=t("cli.profile"))

    partner = commands.add_parser("partenaire", aliases=["partner"], help=t("cli.partner"))
    partner_actions = partner.add_subparsers(dest="action", required=True)
    for action, aliases, key in (("ajouter", ["add"], "cli.partner.add"),
                                 ("retirer", ["remove"], "cli.partner.remove")):
        sub = partner_actions.add_parser(action, aliases=aliases, help=t(key))
        sub.add_argument("serveur", help=t("cli.partner.server"))
    partner_actions.add_parser("liste", aliases=["list"], help=t("cli.partner.list"))

    commands.add_parser("down", help=t("cli.down"))
    commands.add_parser("bots", help=t("cli.bots"))
    commands.add_parser("courriel", help=t("cli.email"))
    portal = commands.add_parser("portail", aliases=["portal"], help=t("cli.portal"))
    portal.add_argument("action", nargs="?", choices=["vérifier", "verifier", "check"], help=t("cli.portal.check"))
    portal.add_argument("--réparer", "--reparer", "--repair", dest="repair", action="store_true",
                        help=t("cli.portal.repair"))
    commands.add_parser("idp-dev", help=t("cli.idp_dev"))
    recipes = commands.add_parser("deploiement", aliases=["deploy"], help=t("cli.recipes"))
    recipes.add_argument("--vers", "--to", dest="destination", required=True, help=t("cli.recipes.destination"))
    recipes.add_argument("--certificat", default="", help=t("cli.recipes.certificate"))
    recipes.add_argument("--cle", default="", help=t("cli.recipes.key"))
    prepare = commands.add_parser("preparer", aliases=["prepare"], help=t("cli.prepare"))
    prepare.add_argument("service", help=t("cli.prepare.service"))
    commands.add_parser("migre-postgresql", aliases=["migrate-postgresql"], help=t("cli.migrate"))
    backup = commands.add_parser("sauvegarde", aliases=["backup"], help=t("cli.backup"))
    backup.add_argument("--vers", "--to", dest="destination", help=t("cli.backup.destination"))
    restore = commands.add_parser("restaure", aliases=["restore"], help=t("cli.restore"))
    restore.add_argument("archive", help=t("cli.restore.archive"))
    restore.add_argument("--ecraser", "--écraser", "--overwrite", dest="overwrite", action="store_true",
                         help=t("cli.restore.overwrite"))
    status = commands.add_parser("status", help=t("cli.status"))
    status.add_argument("--json", action="store_true", help=t("cli.status.json"))
    return parser


def init(path: Path, *, name: str, server_name: str, demo: bool) -> int:
    if path.exists():
        print(t("init.exists", path=path), file=sys.stderr)
        return launcher.EXIT_FAILED
    text = render_config_template(name, server_name, demo)
    config = parse_config(tomllib.loads(text), source=path)  # refuse a bad --nom-serveur early
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    ensure_secrets(config.data_dir)
    print(t("init.written", path=path))
    print(t("init.secrets", path=config.data_dir / "secrets"))
    print(t("init.next", path=path))
    return launcher.EXIT_OK


def _load(path: Path, *, create_demo: bool) -> Config:
    if create_demo and not path.exists():
        print(t("up.creating_config", path=path))
        init(path, name=DEMO_NAME, server_name=DEMO_SERVER_NAME, demo=True)
    config = load_config(path)
    set_language(config.collectivite.langue)
    return config


def _running_profile(config: Config) -> str | None:
    """The profile a running stack was started with (``up --profile scaled``): what a backup
    or a check of it must follow."""
    return str(launcher.read_state(config).get("profil") or "") or None if launcher.is_running(config) else None


def _start_neighbour(config: Config) -> Config:
    from maillage.deploy.neighbour import prepare_neighbour

    main_config, neighbour = prepare_neighbour(config)
    if not launcher.is_running(neighbour):
        print(t("neighbour.starting", path=neighbour.data_dir))
        if launcher.up_detached(neighbour) != launcher.EXIT_OK:
            raise SystemExit(launcher.EXIT_FAILED)
    return main_config


def _backup(config: Config, destination: str | None) -> int:
    folder = Path(destination) if destination else config.resolve(config.sauvegarde.repertoire)
    try:
        archive = back_up(config, folder)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return launcher.EXIT_FAILED
    print(t("backup.done", path=archive, size=f"{archive.stat().st_size / 2**20:.1f}"))
    for removed in prune(folder, daily=config.sauvegarde.quotidiennes, weekly=config.sauvegarde.hebdomadaires):
        print(t("backup.pruned", path=removed.name))
    return launcher.EXIT_OK


def _recipes(config: Config, destination: Path, certificate: str, key: str) -> int:
    try:
        written = write_recipes(config, ensure_secrets(config.data_dir), destination, certificate=certificate, key=key)
    except RecipeError as exc:
        print(exc, file=sys.stderr)
        return launcher.EXIT_FAILED
    print(t("recipes.written", count=len(written), path=destination))
    return launcher.EXIT_OK


def _prepare(config: Config, name: str) -> int:
    """What ``maillage up`` does before starting one service (a systemd unit's ExecStartPre)."""
    services = {s.name: s for s in stack_services(config, ensure_secrets(config.data_dir))}
    if name not in services:
        print(t("prepare.unknown", name=name, names=", ".join(services)), file=sys.stderr)
        return EXIT_USAGE
    try:
        services[name].prepare()
    except PrepareError as exc:
        print(exc, file=sys.stderr)
        return launcher.EXIT_FAILED
    return launcher.EXIT_OK


def _migrate(config: Config) -> int:
    if launcher.is_running(config):
        print(t("migrate.running"), file=sys.stderr)
        return launcher.EXIT_FAILED
    try:
        migrate_to_postgresql(config, ensure_secrets(config.data_dir), print)
    except MigrationError as exc:
        print(exc, file=sys.stderr)
        return launcher.EXIT_FAILED
    set_scaled_profile(config.source)
    print(t("migrate.done", path=config.source))
    return launcher.EXIT_OK


def _restore(archive: Path, target: Path, overwrite: bool) -> int:
    try:
        manifest = restore(archive, target, overwrite=overwrite)
    except BackupError as exc:
        print(exc, file=sys.stderr)
        return launcher.EXIT_FAILED
    print(t("backup.restored", path=target, date=manifest.get("cree_le", "?"),
            files=len(manifest.get("fichiers", {}))))  # type: ignore[arg-type]
    if manifest.get("profil") == "reparti":
        print(t("backup.restored_scaled", path=target))
    return launcher.EXIT_OK


def _partners(config: Config, action: str, server: str | None) -> int:
    if action in ("liste", "list"):
        if config.federation.ouverte:
            print(t("partners.open"))
        partners = config.federation.partenaires
        print(t("partners.list") if partners else t("partners.none"))
        for partner in partners:
            print(f"  {partner}")
        return launcher.EXIT_OK
    adding = action in ("ajouter", "add")
    assert server is not None
    updated = change_partners(config.source, add=server if adding else None, remove=None if adding else server)
    print(t("partners.added" if adding else "partners.removed", server=server))
    return launcher.reload(updated)


def main(argv: list[str] | None = None) -> int:
    # Everything the stack writes (databases with tokens, keys, logs) is private,
    # in this process and in every child it starts.
    private_umask()
    args = _parser().parse_args(argv)
    path = config_path(args.config, args.data_dir)
    # The quick start creates a demo config at the default place; an explicit
    # path that does not exist is an error, never silently created.
    default_place = not (args.config or args.data_dir) and path == Path("donnees") / CONFIG_FILENAME
    try:
        if args.command == "init":
            return init(path, name=args.nom, server_name=args.nom_serveur, demo=args.demo)
        if args.command in ("restaure", "restore"):
            return _restore(Path(args.archive), path.parent, args.overwrite)
        config = _load(path, create_demo=args.command == "up" and default_place)
        config = with_profile(config, getattr(args, "up_profile", None) or args.profile or _running_profile(config))
        if args.command == "up":
            if args.with_neighbour:  # the file is read again there: the profile chosen stays
                config = with_profile(_start_neighbour(config), config.deploiement.profil)
            if args.detach:
                return launcher.up_detached(config)
            return launcher.up(config, show_summary=not args.no_summary)
        if args.command in ("partenaire", "partner"):
            return _partners(config, args.action, getattr(args, "serveur", None))
        if args.command == "down":
            return launcher.down(config)
        if args.command == "bots":
            from maillage.bots.main import main as run_bots

            return run_bots(config)
        if args.command in ("deploiement", "deploy"):
            return _recipes(config, Path(args.destination), args.certificat, args.cle)
        if args.command in ("preparer", "prepare"):
            return _prepare(config, args.service)
        if args.command in ("migre-postgresql", "migrate-postgresql"):
            return _migrate(config)
        if args.command in ("sauvegarde", "backup"):
            return _backup(config, args.destination)
        if args.command == "courriel":
            from maillage.bridges.email.main import main as run_bridge

            return run_bridge(config)
        if args.command in ("portail", "portal") and args.action:
            from maillage.portal.drift import check_command

            return asyncio.run(check_command(config, ensure_secrets(config.data_dir), repair=args.repair,
                                             out=sys.stdout))
        if args.command in ("portail", "portal", "idp-dev"):
            from maillage.portal.serve import serve_dev_provider, serve_portal

            serve = serve_dev_provider if args.command == "idp-dev" else serve_portal
            return serve(config, ensure_secrets(config.data_dir))
        report = launcher.status(config)
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            launcher.print_status(report, out=sys.stdout)
        return launcher.EXIT_OK if report["sain"] else launcher.EXIT_FAILED
    except (ConfigError, SecretsError, PartnerError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(t("cli.interrupted"), file=sys.stderr)
        return 130
