"""Secrets: generated once, mode 0600, never shown, refused or narrowed when exposed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from maillage.secretstore import SecretsError, ensure_secrets, load_secrets


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    first = ensure_secrets(tmp_path)
    second = ensure_secrets(tmp_path)
    assert first == second
    assert len({first.registration_shared_secret, first.macaroon_secret_key, first.form_secret}) == 3
    assert _mode(tmp_path / "secrets") == 0o700
    for name in ("secrets.toml", "signing.key"):
        assert _mode(tmp_path / "secrets" / name) == 0o600
    assert (tmp_path / "secrets" / "signing.key").read_text().startswith("ed25519 a_")


def test_a_secret_file_readable_by_others_is_narrowed_and_the_admin_told(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    path = tmp_path / "secrets" / "secrets.toml"
    os.chmod(path, 0o644)
    told: list[str] = []
    load_secrets(tmp_path, warn=told.append)
    assert _mode(path) == 0o600
    assert len(told) == 1 and "0o644" in told[0] and "0600" in told[0]


def test_the_signing_key_is_narrowed_too(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    key = tmp_path / "secrets" / "signing.key"
    os.chmod(key, 0o664)
    told: list[str] = []
    ensure_secrets(tmp_path, warn=told.append)
    assert _mode(key) == 0o600 and told


@pytest.mark.skipif(os.getuid() != 0, reason="changing a file's owner needs root")
def test_a_secret_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    ensure_secrets(tmp_path)
    path = tmp_path / "secrets" / "secrets.toml"
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretsError, match="appartient à un autre utilisateur"):
        load_secrets(tmp_path)


def test_a_corrupt_secret_file_is_refused_without_showing_its_content(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path)
    path = tmp_path / "secrets" / "secrets.toml"
    path.write_text(path.read_text() + "\nceci n'est pas du toml = = \n")
    with pytest.raises(SecretsError) as caught:
        load_secrets(tmp_path)
    assert "sauvegarde" in str(caught.value)
    assert secrets.macaroon_secret_key not in str(caught.value)


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path)
    assert secrets.registration_shared_secret not in repr(secrets)
    assert secrets.dav_password not in f"{secrets}"
