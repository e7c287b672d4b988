"""The collectivité config: what an admin gets back for each kind of mistake."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.config import (
    ConfigError,
    check_data_dir,
    load_config,
    parse_config,
    render_config_template,
    with_profile,
)
from tests.harness.servers import config_document, toml_dump


def _write(tmp_path: Path, document: dict[str, Any] | str) -> Path:
    path = tmp_path / "maillage.toml"
    path.write_text(document if isinstance(document, str) else toml_dump(document), "utf-8")
    return path


def _problems(tmp_path: Path, document: dict[str, Any] | str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, document))
    return str(caught.value)


def test_the_generated_file_loads_with_its_documented_defaults(tmp_path: Path) -> None:
    text = render_config_template("Commune d’Exemple", "mairie.example.fr", demo=False)
    config = load_config(_write(tmp_path, text))
    assert config.collectivite.nom == "Commune d’Exemple"
    assert config.collectivite.fuseau_horaire == "Europe/Paris"
    assert config.reseau.port_synapse == 8008
    assert config.public_baseurl == "http://localhost:8008/"
    assert config.data_dir == tmp_path.resolve()
    assert config.federation.partenaires == [] and not config.federation.ouverte
    assert not config.demo.activee


@pytest.mark.parametrize(("reception", "single", "scaled"), [
    ("automatique", False, True),  # the template's: pushed where bots sit in thousands of rooms
    ("synchronisation", False, False),
    ("appservice", True, True),
])
def test_the_bots_are_pushed_their_events_in_the_scaled_profile_unless_told_otherwise(
    tmp_path: Path, reception: str, single: bool, scaled: bool
) -> None:
    text = render_config_template("Commune d’Exemple", "mairie.example.fr", demo=False)
    assert 'reception = "automatique"' in text
    config = load_config(_write(tmp_path, text.replace('reception = "automatique"', f'reception = "{reception}"')))
    assert config.bots_pushed is single
    assert with_profile(config, "scaled").bots_pushed is scaled


def test_a_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert "maillage init" in str(caught.value)


def test_a_file_that_is_not_toml_names_the_line(tmp_path: Path) -> None:
    message = _problems(tmp_path, "[collectivite]\nnom = Mairie sans guillemets\n")
    assert "TOML" in message and "line 2" in message


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    document = config_document()
    del document["collectivite"]["nom_serveur"]
    message = _problems(tmp_path, document)
    assert "collectivite.nom_serveur : clé obligatoire manquante" in message


def test_a_misspelt_key_is_refused_not_ignored(tmp_path: Path) -> None:
    document = config_document(reseau={"prot_synapse": 8008})
    assert "reseau.prot_synapse : clé inconnue" in _problems(tmp_path, document)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("reseau", "port_synapse", "8008", "un nombre entier"),
        ("reseau", "port_synapse", 70000, "bornes"),
        ("reseau", "adresse_ecoute", "localhost", "une adresse IP"),
        ("reseau", "url_publique", "matrix.mairie.fr", "http:// ou https://"),
        ("collectivite", "langue", "de", "'fr' or 'en'"),
        ("collectivite", "fuseau_horaire", "Paris", "Europe/Paris"),
        ("collectivite", "nom", "", "au moins 1 caractère"),
        ("collectivite", "nom", "x" * 121, "au plus 120 caractères"),
        ("federation", "ouverte", "oui", "true ou false"),
        ("federation", "partenaires", "agglo.example.fr", "une liste"),
        ("webdav", "url", "ftp://cloud.example.fr/", "http:// ou https://"),
        ("smtp", "securite", "ssl", "starttls"),
        ("projets", "rappels_heure", "8h30", "HH:MM"),
        ("projets", "rappels_heure", "24:00", "HH:MM"),
        ("projets", "rappels", "oui", "true ou false"),
        ("bots", "reception", "push", "'automatique', 'synchronisation' or 'appservice'"),
    ],
)
def test_a_wrong_value_names_key_value_and_expectation(
    tmp_path: Path, section: str, key: str, value: object, expected: str
) -> None:
    message = _problems(tmp_path, config_document(**{section: {key: value}}))
    assert f"{section}.{key} = " in message
    assert repr(value).strip("'")[:60] in message
    assert expected in message


@pytest.mark.parametrize(
    "server_name",
    ["Mairie de Bourg", "mairie.example.fr:99999", "-mairie.fr", "mairie_.fr", "[::1", "a" * 256,
     "mairie.fr:port", "[zz::1]:8448", ""],
)
def test_an_invalid_matrix_server_name_is_refused(tmp_path: Path, server_name: str) -> None:
    message = _problems(tmp_path, config_document(collectivite={"nom_serveur": server_name}))
    assert "collectivite.nom_serveur" in message
    assert "nom de serveur Matrix" in message or "au moins 1 caractère" in message


@pytest.mark.parametrize(
    "server_name", ["mairie.example.fr", "localhost:8448", "127.0.0.1", "[::1]:8448", "agglo-42.fr"]
)
def test_valid_matrix_server_names_are_accepted(tmp_path: Path, server_name: str) -> None:
    config = load_config(_write(tmp_path, config_document(collectivite={"nom_serveur": server_name})))
    assert config.collectivite.nom_serveur == server_name


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(deadline=None)  # the first example loads catalogues: not a speed test
@given(labels=st.lists(_label, min_size=1, max_size=4), port=st.none() | st.integers(1, 65535))
def test_any_dns_name_with_optional_port_is_a_server_name(labels: list[str], port: int | None) -> None:
    name = ".".join(labels) + (f":{port}" if port else "")
    document = config_document(collectivite={"nom_serveur": name})
    assert parse_config(document, source=Path("maillage.toml")).collectivite.nom_serveur == name


@pytest.mark.parametrize(
    ("circuits", "expected"),
    [
        ({"modeles": [{"nom": "arrêté", "etapes": "visa @chef"}]}, "Étapes non comprises"),
        ({"modeles": [{"nom": "arrêté", "etapes": "visa: chef"}]}, "« chef » n’est pas un agent"),
        ({"modeles": [{"nom": "arrêté", "etapes": "signature:"}]}, "n’a personne"),
        ({"modeles": [{"nom": "Arrêté", "etapes": "visa: @a"}, {"nom": "arrêté", "etapes": "visa: @b"}]},
         "deux modèles ont le même nom"),
        ({"cachet_certificat": "/etc/hostname"}, "vont ensemble"),
        ({"cachet_certificat": "/nulle/part.pem", "cachet_cle": "/nulle/part.key"}, "un fichier qui existe"),
        ({"rappels_heure": "8h"}, "HH:MM"),
        ({"intervalle_secondes": 1}, "bornes"),
    ],
)
def test_wrong_circuit_settings_say_what_to_write(tmp_path: Path, circuits: dict[str, Any], expected: str) -> None:
    assert expected in _problems(tmp_path, config_document(circuits=circuits))


def test_two_services_on_one_port_are_refused(tmp_path: Path) -> None:
    message = _problems(tmp_path, config_document(reseau={"port_caldav": 8008, "port_synapse": 8008}))
    assert "le port 8008 est attribué deux fois" in message


def test_an_smtp_relay_needs_a_sender_address(tmp_path: Path) -> None:
    message = _problems(tmp_path, config_document(smtp={"hote": "smtp.example.fr"}))
    assert "smtp.expediteur" in message


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    document = config_document(reseau={"port_webdav": "x"}, collectivite={"langue": "de"})
    message = _problems(tmp_path, document)
    assert "reseau.port_webdav" in message and "collectivite.langue" in message


def test_a_data_directory_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "un-fichier"
    blocker.write_text("pas un répertoire")
    document = config_document(donnees={"repertoire": str(blocker / "donnees")})
    config = load_config(_write(tmp_path, document))
    with pytest.raises(ConfigError) as caught:
        check_data_dir(config)
    assert "donnees.repertoire" in str(caught.value)
    assert str(blocker / "donnees") in str(caught.value)


def test_relative_data_directory_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, config_document(donnees={"repertoire": "pile"})))
    assert config.data_dir == (tmp_path / "pile").resolve()


def test_the_english_catalogue_is_used_when_the_config_says_so(tmp_path: Path) -> None:
    from maillage.i18n import set_language

    set_language("en")
    try:
        message = _problems(tmp_path, config_document(reseau={"port_synapse": "8008"}))
    finally:
        set_language("fr")
    assert "a whole number" in message and "invalid value" in message


def test_config_values_are_frozen(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, config_document()))
    with pytest.raises(Exception, match="frozen"):
        setattr(config.reseau, "port_synapse", 1)  # noqa: B010 (the assignment must be dynamic)


def test_toml_dump_round_trips() -> None:
    document = config_document(federation={"partenaires": ["a.fr", "b.fr"]})
    assert tomllib.loads(toml_dump(document)) == document


@pytest.mark.parametrize(("section", "key"), [("smtp", "ca"), ("courriel", "relais_ca")])
def test_a_relay_authority_file_that_does_not_exist_is_refused(tmp_path: Path, section: str, key: str) -> None:
    message = _problems(tmp_path, config_document(**{section: {key: "/nulle/part/ca.pem"}}))
    assert f"{section}.{key}" in message and "un fichier qui existe" in message
