"""The bots' crypto machine: what a to-device message changes is stored all at once, or not at all.

mautrix's OlmMachine stores a room key's Olm message in several writes (the account without
the one-time key used, the Olm session, the Megolm key), each on its own, and keeps the Olm
state in memory. If the database goes away between two writes (a PostgreSQL restart), the
memory has moved on and the database partly so: the message, read again, no longer decrypts,
and the room key is lost with every message of its session. Here a to-device message is
handled in one transaction and in arrival order; when it fails, the Olm state in memory is
dropped and read back from the database, so the message read again decrypts as the first time.

New one-time keys are stored before they are uploaded (mautrix stores them after): a process
killed between the two would leave on the homeserver keys whose private halves are gone, and
every agent who opens an Olm session with one of them sends the bot room keys it cannot read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextvars import ContextVar
from typing import Any, cast

from mautrix.crypto import OlmMachine, PgCryptoStore
from mautrix.types import DecryptedOlmEvent, EncryptionKeyAlgorithm, EventType, SessionID, ToDeviceEvent

from maillage.bots.runtime.store import transaction

# The room keys a to-device message's transaction stored, told to their waiters once committed.
_KEYS_IN_TRANSACTION: ContextVar[list[SessionID] | None] = ContextVar("maillage_keys_in_transaction", default=None)


class RevertibleCryptoStore(PgCryptoStore):
    """mautrix's store, whose Olm state kept in memory can be dropped after a rolled-back change."""

    def forget_olm_state(self) -> None:
        self._account = None
        self._olm_cache.clear()


class AtomicOlmMachine(OlmMachine):
    crypto_store: RevertibleCryptoStore

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Taken by whatever writes the Olm account: a to-device message (FIFO, so an Olm
        # session's messages decrypt in order) and the upload of new one-time keys, which
        # must not store the account between a message's decryption and its commit.
        self._olm_writes = asyncio.Lock()
        self._olm_state_stale = False

    async def handle_to_device_event(self, evt: ToDeviceEvent) -> None:
        if isinstance(evt, DecryptedOlmEvent):  # refused by mautrix itself, nothing is stored
            await super().handle_to_device_event(evt)
            return
        async with self._olm_writes:
            decrypted = await self._store_what_it_carries(evt)
        if decrypted is not None:  # other to-device events go to their handlers, outside the transaction
            self.client.dispatch_event(cast(Any, decrypted), source=cast(Any, evt).source)  # as mautrix does

    async def share_keys(self, current_otk_count: int | None = None) -> None:
        async with self._olm_writes:
            await self._read_back_if_stale()
            await super().share_keys(current_otk_count)

    async def _share_keys(self, current_otk_count: int | None) -> None:
        """mautrix's, with the account (and the private halves of the new keys) stored before
        the upload: killed after it, the keys the homeserver hands out are still the bot's; killed
        before, the next start uploads the same keys, which the homeserver takes again."""
        account = self.account
        assert account is not None  # loaded before the first share
        if current_otk_count is None or (self._last_key_share + 60 > time.monotonic() and current_otk_count < 10):
            current_otk_count = (await self.client.upload_keys()).get(EncryptionKeyAlgorithm.SIGNED_CURVE25519, 0)
        device_keys = account.get_device_keys(self.client.mxid, self.client.device_id) if not account.shared else None
        one_time_keys = account.get_one_time_keys(self.client.mxid, self.client.device_id, current_otk_count)
        if not device_keys and not one_time_keys:
            return
        await self.crypto_store.put_account(account)
        await self.client.upload_keys(one_time_keys=one_time_keys, device_keys=device_keys)
        account.shared = True
        account.mark_keys_as_published()
        self._last_key_share = time.monotonic()
        await self.crypto_store.put_account(account)

    async def _store_what_it_carries(self, evt: ToDeviceEvent) -> DecryptedOlmEvent | None:
        """Decrypt and store a room key in one transaction; any other event decrypted is returned."""
        await self._read_back_if_stale()
        received: list[SessionID] = []
        token = _KEYS_IN_TRANSACTION.set(received)
        try:
            async with transaction(self.crypto_store.db):
                decrypted = await self._decrypt_olm_event(evt)
                if decrypted.type == EventType.ROOM_KEY:
                    await self._receive_room_key(decrypted)
                elif decrypted.type == EventType.FORWARDED_ROOM_KEY:
                    await self._receive_forwarded_room_key(decrypted)
                else:
                    return decrypted
            for session_id in received:  # committed: whoever waits for these keys can read them now
                super()._mark_session_received(session_id)
            return None
        except Exception:
            # Rolled back: the memory goes back to what the database holds, before anything
            # else stores the account (now if the database answers, else before the next write).
            self.crypto_store.forget_olm_state()
            self._olm_state_stale = True
            with contextlib.suppress(Exception):
                await self._read_back_if_stale()
            raise
        finally:
            _KEYS_IN_TRANSACTION.reset(token)

    def _mark_session_received(self, session_id: SessionID) -> None:
        received = _KEYS_IN_TRANSACTION.get()
        if received is None:
            super()._mark_session_received(session_id)
        else:  # not committed yet: a message decrypted now would not find its key
            received.append(session_id)

    async def _read_back_if_stale(self) -> None:
        if self._olm_state_stale:
            self.account = await self.crypto_store.get_account()
            self._olm_state_stale = False

