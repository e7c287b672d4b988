"""``maillage portail`` and ``maillage idp-dev``: the portal and the development provider, served."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from maillage.config import Config, url_host
from maillage.logs import configure_logging
from maillage.portal.idp_dev import Client, DevProvider, Directory, create_app, signing_key
from maillage.secretstore import Secrets, secrets_dir


def dev_provider_app(config: Config, stack_secrets: Secrets) -> FastAPI:
    """The bundled provider with the stack's client: the portal."""
    portal = config.portal_url
    clients = [Client(config.portail.oidc_client, stack_secrets.portal_oidc_secret, (portal + "/connexion/retour",),
                      (portal + "/deconnecte",))]
    key = signing_key(secrets_dir(config.data_dir) / "oidc-dev.pem")
    directory = Directory(config.data_dir / "oidc-dev" / "annuaire.json")
    return create_app(DevProvider(config.oidc_issuer, key, clients, directory))


def serve(app: FastAPI, host: str, port: int) -> int:
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
                proxy_headers=False)
    return 0


def serve_portal(config: Config, stack_secrets: Secrets) -> int:
    configure_logging(config, "portail")
    from maillage.portal.app import create_app as portal_app

    return serve(portal_app(config, stack_secrets), url_host(config.reseau.adresse_ecoute), config.portail.port)


def serve_dev_provider(config: Config, stack_secrets: Secrets) -> int:
    return serve(dev_provider_app(config, stack_secrets), url_host(config.reseau.adresse_ecoute),
                 config.portail.port_oidc_dev)
