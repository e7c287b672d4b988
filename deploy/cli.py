"""The ``maillage`` command: init, up, down, status."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from maillage.config import CONFIG_FILENAME, Config, ConfigError, config_path, load_config, parse_config
from maillage.deploy import launcher
from maillage.i18n import set_language, t
from maillage.secretstore import SecretsError, ensure_secrets

EXIT_USAGE = 2

DEMO_NAME = "Mairie de Bourg-Vallon (démonstration)"
DEMO_SERVER_NAME = "localhost"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maillage", description=t("cli.description"))
    parser.add_argument("-c", "--config", help=t("cli.config"))
    parser.add_argument("-d", "--data-dir", help=t("cli.data_dir"))
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help=t("cli.init"))
    init.add_argument("--nom", default=DEMO_NAME, help=t("cli.init.name"))
    init.add_argument("--nom-serveur", default=DEMO_SERVER_NAME, help=t("cli.init.server_name"))
    init.add_argument("--demo", action="store_true", help=t("cli.init.demo"))

    up = commands.add_parser("up", help=t("cli.up"))
    up.add_argument("--detach", action="store_true", help=t("cli.up.detach"))
    up.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)

    commands.add_parser("down", help=t("cli.down"))
    status = commands.add_parser("status", help=t("cli.status"))
    status.add_argument("--json", action="store_true", help=t("cli.status.json"))
    return parser


def render_config_template(name: str, server_name: str, demo: bool) -> str:
    template = resources.files("maillage").joinpath("maillage.toml.template").read_text("utf-8")
    return template.format(nom=json.dumps(name, ensure_ascii=False),
                           nom_serveur=json.dumps(server_name), demo="true" if demo else "false")


def init(path: Path, *, name: str, server_name: str, demo: bool) -> int:
    if path.exists():
        print(t("init.exists", path=path), file=sys.stderr)
        return launcher.EXIT_FAILED
    text = render_config_template(name, server_name, demo)
    import tomllib

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = config_path(args.config, args.data_dir)
    # The quick start creates a demo config at the default place; an explicit
    # path that does not exist is an error, never silently created.
    default_place = not (args.config or args.data_dir) and path == Path("donnees") / CONFIG_FILENAME
    try:
        if args.command == "init":
            return init(path, name=args.nom, server_name=args.nom_serveur, demo=args.demo)
        config = _load(path, create_demo=args.command == "up" and default_place)
        if args.command == "up":
            if args.detach:
                return launcher.up_detached(config)
            return launcher.up(config, show_summary=not args.no_summary)
        if args.command == "down":
            return launcher.down(config)
        report = launcher.status(config)
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            launcher.print_status(report, out=sys.stdout)
        return launcher.EXIT_OK if report["sain"] else launcher.EXIT_FAILED
    except (ConfigError, SecretsError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(t("cli.interrupted"), file=sys.stderr)
        return 130
