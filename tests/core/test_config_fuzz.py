"""Any config file loads, or is refused with French messages that each name the key at fault.

Property tests (hypothesis): documents built from the real sections and keys (and unknown
ones) with values of every TOML type, written with a small TOML writer; then any text at all,
and valid files with characters thrown in. Loading gives a ``Config`` or a ``ConfigError``,
never another exception (a traceback in front of the admin).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from maillage.config import Config, ConfigError, load_config, render_config_template
from maillage.i18n import t
from tests.messages import assert_french

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- a TOML writer for everything the generated documents hold ------------------------------


def toml_string(text: str) -> str:
    escaped = ""
    for char in text:
        if char in '"\\':
            escaped += "\\" + char
        elif unicodedata.category(char) == "Cc":
            escaped += f"\\u{ord(char):04x}"
        else:
            escaped += char
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_dump(document: dict[str, Any]) -> str:
    """Top-level keys first, then ``[section]`` tables, then ``[[section]]`` arrays of tables."""
    def is_tables(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)

    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for name, value in document.items():
        for table in [value] if isinstance(value, dict) else value if is_tables(value) else []:
            lines.append(("[{}]" if isinstance(value, dict) else "[[{}]]").format(toml_string(name)))
            lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# --- documents -----------------------------------------------------------------------------

SECTIONS: dict[str, type[BaseModel]] = {}
for _name, _field in Config.model_fields.items():
    _kind = _field.annotation
    _item = getattr(_kind, "__args__", (None,))[0]
    if isinstance(_kind, type) and issubclass(_kind, BaseModel):
        SECTIONS[_name] = _kind
    elif isinstance(_item, type) and issubclass(_item, BaseModel):
        SECTIONS[_name] = _item
SCHEMA_KEYS = set(SECTIONS) | {f"{section}.{key}" for section, model in SECTIONS.items() for key in model.model_fields}

GOOD = [
    "localhost", "mairie.example.fr", "localhost:8448", "[::1]:8448", "Europe/Paris", "127.0.0.1", "::",
    "http://localhost:8008/", "https://cloud.example.fr/dav/", "", "fr", "en", "commune", "starttls",
    "{date}_{service}_{nom}", "@jean.dupont:localhost", "10.0.0.0/8", "postgresql://maillage@localhost/bots",
    "agent@mairie.example.fr", 8448, 587, 8008, 100, 600, 10_000, True, False, date(2030, 1, 1), [],
    ["agglo.example.fr"],
]
NASTY = [
    "localhost\n", "localhost:²", "localhost:٣", "[::1", "[::1]x", "America", "Europe", "a" * 5000, "../../etc",
    "/dev/null", "\x00", "http://[", "http://a\n/", "http://", "::1%\x00", "1.2.3.4/\x00", "{nom}{date.foo}",
    "{nom}{nom[x]}", "{nom}{0}", "{nom}{", "{nom:{date.x}}", "{{nom}}", "\u202e", "é", "０", "1e3", "-1", "0",
    "65536", 0, -1, 65536, 2**63 - 1, -(2**63), 1.5, math.inf, math.nan, datetime(2030, 1, 1, 12), time(8, 30),
    datetime(2030, 1, 1, 12, tzinfo=UTC),
]
SCALARS = st.one_of(
    st.sampled_from(GOOD), st.sampled_from(NASTY), st.text(max_size=30), st.booleans(),
    st.integers(-(2**63), 2**63 - 1), st.floats(), st.dates(), st.times(),
    st.datetimes(timezones=st.sampled_from([None, UTC])),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def section_keys(section: str) -> st.SearchStrategy[str]:
    known = sorted(SECTIONS[section].model_fields) if section in SECTIONS else []
    return st.sampled_from(known) | st.text(max_size=12) if known else st.text(max_size=12)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {"collectivite": {"nom": "Mairie de Test", "nom_serveur": "localhost"}}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=12), max_size=4)):
        if section == "externes" or draw(st.integers(0, 9)) == 0:  # an array of tables, or not a table
            shape = st.lists(st.dictionaries(section_keys(section), VALUES, max_size=3), min_size=1, max_size=2)
            document[section] = draw(shape | VALUES)
            continue
        table = document.setdefault(section, {}) if isinstance(document.get(section), dict) else {}
        table.update(draw(st.dictionaries(section_keys(section), VALUES, max_size=4)))
        document[section] = table
    if draw(st.booleans()) and isinstance(document.get("collectivite"), dict):
        document["collectivite"].pop(draw(st.sampled_from(["nom", "nom_serveur"])), None)
    return document


def key_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Every key of a document as the messages write it (``federation.partenaires.0``)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        path = prefix + (str(key) if re.fullmatch(r"[A-Za-z0-9_-]+", str(key)) else json.dumps(key, ensure_ascii=False))
        yield path
        yield from key_paths(item, path + ".")


# --- what a refusal must say ----------------------------------------------------------------

_NAMING_KEY = ("config.bad_value", "config.key_missing", "config.key_unknown", "config.federation_file_missing")


def assert_clear_refusal(error: ConfigError, path: Path, document: dict[str, Any] | None, text: str) -> None:
    message = str(error)
    assert error.path == path and error.problems
    assert message.splitlines()[0] == t("config.invalid", where=f" ({path})")
    known_keys = SCHEMA_KEYS | set(key_paths(document or {}))
    for problem in error.problems:
        found = assert_french(problem, "config.", typed=text)
        if found.key in _NAMING_KEY:
            assert found.values["key"] in known_keys or re.fullmatch(r"externes\.\d+\.\w+", found.values["key"]), \
                f"{problem!r} does not name a key of the file"
        if found.key == "config.bad_value":
            assert_french(found.values["expected"], "config.expected.", typed=text)
        elif found.key == "config.duplicate_port":
            assert {found.values["first"], found.values["second"]} <= SCHEMA_KEYS
        elif found.key == "config.not_toml":
            detail = found.values["detail"]
            assert document is None, f"a valid TOML document was refused as not TOML: {problem!r}"
            assert re.search(r"line \d+, column \d+|end of document", detail) or detail == t("config.too_deep"), \
                problem
        else:
            assert found.key in (*_NAMING_KEY, "config.federation_certificate"), problem


def load(tmp_path: Path, text: str, document: dict[str, Any] | None = None) -> Config | None:
    path = tmp_path / "maillage.toml"
    path.write_text(text, "utf-8")
    try:
        return load_config(path)
    except ConfigError as error:
        assert_clear_refusal(error, path, document, text)
        return None


pytestmark = pytest.mark.usefixtures("in_french")


# --- the properties -------------------------------------------------------------------------


@SETTINGS
@given(document=documents())
@example(document={"collectivite": {"nom": "x", "nom_serveur": "localhost\n"}})
@example(document={"collectivite": {"nom": "x", "nom_serveur": "localhost", "fuseau_horaire": "America"}})
@example(document={"collectivite": {"nom": "x", "nom_serveur": "localhost"}, "reseau": {"url_publique": "http://["}})
@example(document={"collectivite": {"nom": "x", "nom_serveur": "localhost"},
                   "documents": {"modele_nom": "{nom}{date.foo}"}})
@example(document={"collectivite": {"nom": "x", "nom_serveur": "localhost"},
                   "federation": {"ouverte": True, "certificat": "a" * 5000, "cle": "\x00"}})
@example(document={"collectivite": 3, "": {"": []}, "externes": [{"compte": 1}]})
def test_any_document_loads_or_is_refused_naming_the_key(tmp_path_factory: pytest.TempPathFactory,
                                                         document: dict[str, Any]) -> None:
    text = toml_dump(document)
    parsed = tomllib.loads(text)
    if "nan" not in text:
        assert parsed == document  # the writer is right, so a refusal is the loader's
    config = load(tmp_path_factory.mktemp("config"), text, parsed)
    if config is not None:
        assert isinstance(config, Config)


@SETTINGS
@given(text=st.text(max_size=400))
@example(text="[collectivite]\nnom = Mairie sans guillemets\n")
@example(text="a = " + "[" * 5000 + "]" * 5000)
@example(text="a = " + "{b = " * 3000 + "1" + "}" * 3000)
@example(text="[[[x]]]")
@example(text='a = "\x00"')
def test_any_text_loads_or_is_refused_clearly(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        document = None
    load(tmp_path_factory.mktemp("config"), text, document)


_VALID = render_config_template("Commune d’Exemple", "mairie.example.fr", demo=False)


@SETTINGS
@given(cuts=st.lists(st.tuples(st.integers(0, len(_VALID)), st.text(max_size=5)), min_size=1, max_size=4))
def test_a_valid_file_with_characters_thrown_in_loads_or_is_refused_clearly(
        tmp_path_factory: pytest.TempPathFactory, cuts: list[tuple[int, str]]) -> None:
    text = _VALID
    for at, inserted in sorted(cuts, reverse=True):
        text = text[:at] + inserted + text[at:]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        document = None
    load(tmp_path_factory.mktemp("config"), text, document)


# --- what the properties found, kept as plain examples ---------------------------------------


@pytest.mark.parametrize(("section", "key", "value"), [
    ("collectivite", "nom_serveur", "localhost\n"),  # was accepted (a regular expression's `$`)
    ("collectivite", "nom_serveur", "localhost:٣"),  # was accepted: an Arabic-Indic digit is a digit
    ("collectivite", "nom_serveur", "localhost:²"),  # was refused in English by int()
    ("collectivite", "fuseau_horaire", "America"),  # IsADirectoryError
    ("collectivite", "fuseau_horaire", "a" * 5000),  # OSError: file name too long
    ("reseau", "url_publique", "http://["),  # refused in English by urlsplit
    ("reseau", "url_publique", "http://mairie.example.fr\n/"),  # was accepted
    ("reseau", "adresse_ecoute", "::1%\x00"),  # was accepted: an IPv6 scope takes any character
    ("documents", "modele_nom", "{nom}{date.foo}"),  # AttributeError
    ("documents", "modele_nom", "{nom}{nom[x]}"),  # TypeError
    ("federation", "certificat", "a" * 5000),  # OSError: file name too long
    ("federation", "certificat", "cert\x00.pem"),  # refused in English: "embedded null byte"
    ("reseau", "port_synapse", 0),  # the bound was told in English
])
def test_what_the_properties_found_is_refused_in_french_naming_the_key(
        tmp_path: Path, section: str, key: str, value: Any) -> None:
    document: dict[str, Any] = {"collectivite": {"nom": "Mairie de Test", "nom_serveur": "localhost"}}
    document.setdefault(section, {})[key] = value
    if section == "federation":
        document["federation"] |= {"ouverte": True, "cle": "cle.pem"}
    path = tmp_path / "maillage.toml"
    path.write_text(toml_dump(document), "utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert_clear_refusal(caught.value, path, document, toml_dump(document))
    assert f"{section}.{key}" in caught.value.problems[0]
    assert "{{" not in str(caught.value) and "Input should" not in str(caught.value)


def test_a_file_nested_too_deep_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "maillage.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000, "utf-8")
    with pytest.raises(ConfigError) as caught:  # was a RecursionError
        load_config(path)
    assert caught.value.problems == [t("config.not_toml", detail=t("config.too_deep"))]
