"""Synapse module: the process that pushes events to the application services (the bots, the
email bridge) loses none of them to a database error (PostgreSQL restarted, a connection cut).

Synapse's appservice sender has three places where a database error drops or strands events
until something else happens (seen in tests/deploy/test_scaled_faults.py, the agenda bot's
answer never came):

1. The hand-out (``notify_interested_services``) runs only when a new event is announced. When
   a run fails, the events it was about stay behind its stored position until the next event:
   the last command typed before a quiet moment waits for someone else to speak.
   Every ``CHECK_SECONDS`` this module compares that position with the newest event and runs
   the handler again when it is idle and behind at the same place two turns in a row (once is
   an event on its way).
2. The hand-out has moved its position past events once they are queued; the sender then
   stores them as a transaction. When that step meets a dead connection, Synapse logs « Error
   creating appservice transaction » and the events are gone. The sender's database steps
   (service state, transaction stored, sent, oldest unsent) are tried again here after a
   connection error, with a growing pause, until they pass.
3. A transaction stored but refused by the service is left to a « recoverer »; when marking
   the service down fails, no recoverer starts and the transaction waits for ever. The same
   check finds a service with unsent transactions, no recoverer and nothing in flight at the
   same place two turns in a row, marks it down and starts its recoverer (Synapse's own path).

This reaches past the public ``ModuleApi`` (it has no hook for the appservice sender): the
handler, scheduler and store calls below are Synapse's own, checked by the test above against
the pinned Synapse.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from synapse.appservice import ApplicationServiceState
from synapse.module_api import ModuleApi
from synapse.util.duration import Duration
from twisted.enterprise.adbapi import ConnectionLost

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5
# The sender's database steps tried again after a connection error (the others are not
# transient: tried again, they would fail the same way for ever).
RETRIED_STEPS = frozenset({"get_appservice_state", "set_appservice_state", "create_appservice_txn",
                           "complete_appservice_txn", "get_oldest_unsent_txn"})
LONGEST_PAUSE_SECONDS = 30.0
BUSY_TURNS_TOLD = 12  # a hand-out still running behind after a minute is logged


def transient_errors(store: Any) -> tuple[type[Exception], ...]:
    """What a dead connection raises: the driver's error (psycopg2 or sqlite3), or Twisted's
    once the pool reconnected."""
    module = store.db_pool.engine.module
    return module.OperationalError, module.InterfaceError, ConnectionLost


class RetryingStore:
    """The appservice sender's view of Synapse's store: its steps in ``RETRIED_STEPS`` are
    tried again after a connection error, everything else is the store itself."""

    def __init__(self, store: Any, clock: Any) -> None:
        self._store = store
        self._clock = clock
        self._transient = transient_errors(store)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name not in RETRIED_STEPS:
            return attribute

        async def retried(*args: Any, **kwargs: Any) -> Any:
            return await self._until_it_passes(name, attribute, *args, **kwargs)
        return retried

    async def _until_it_passes(self, name: str, step: Callable[..., Awaitable[Any]], *args: Any,
                               **kwargs: Any) -> Any:
        for attempt in itertools.count(1):
            try:
                return await step(*args, **kwargs)
            except self._transient as error:  # its type only: a message may name the server
                pause = min(0.25 * 2 ** attempt, LONGEST_PAUSE_SECONDS)
                logger.warning("Appservice sender: %s failed (%s, attempt %d); trying again in %.1f s",
                               name, type(error).__name__, attempt, pause)
                await self._clock.sleep(Duration(seconds=pause))
        raise AssertionError("unreachable")


class AppserviceCatchUp:
    def __init__(self, config: dict[str, Any], api: ModuleApi) -> None:
        self.hs = api._hs  # past the public API: see the docstring
        self.behind_at: int | None = None
        self.busy_turns = 0
        self.stranded_at: dict[str, int] = {}
        if self.hs.config.worker.should_notify_appservices:
            controller: Any = self.hs.get_application_service_scheduler().txn_ctrl
            controller.store = RetryingStore(controller.store, self.hs.get_clock())  # a stand-in for the store
            api.looping_background_call(self.catch_up, CHECK_SECONDS * 1000, desc="maillage_appservice_catchup",
                                        run_on_all_instances=True)

    @staticmethod
    def parse_config(config: dict[str, Any]) -> dict[str, Any]:
        return config

    async def catch_up(self) -> None:
        store = self.hs.get_datastores().main
        if not store.get_app_services():
            return
        try:
            await self.hand_out_what_was_left_behind(store)
            for service in store.get_app_services():
                await self.recover_if_stranded(store, service)
        except transient_errors(store) as error:  # the next turn looks again
            logger.info("Appservice catch-up not done this turn (%s)", type(error).__name__)

    async def hand_out_what_was_left_behind(self, store: Any) -> None:
        handler = self.hs.get_application_service_handler()
        last_handed = await store.get_appservice_last_pos()
        newest = store.get_room_max_token()
        if last_handed >= newest.stream:
            self.behind_at, self.busy_turns = None, 0
            return
        if handler.is_processing:
            self.busy_turns += 1
            if self.busy_turns % BUSY_TURNS_TOLD == 0:  # told, not undone: that run may yet finish
                logger.warning("The hand-out to the application services has been running for %d s"
                               " and is still at event %d of %d", self.busy_turns * CHECK_SECONDS, last_handed,
                               newest.stream)
            return
        self.busy_turns = 0
        if self.behind_at != last_handed:
            self.behind_at = last_handed
            return
        logger.warning("Events %d to %d were not handed to the application services; handing them now",
                       last_handed + 1, newest.stream)
        handler.notify_interested_services(newest)

    async def recover_if_stranded(self, store: Any, service: Any) -> None:
        # The store itself, not the sender's retrying view: a turn that meets a dead connection
        # ends, and the next one looks again.
        scheduler = self.hs.get_application_service_scheduler()
        controller = scheduler.txn_ctrl
        if service.id in controller.recoverers or service.id in scheduler.queuer.requests_in_flight:
            self.stranded_at.pop(service.id, None)
            return
        oldest = await store.get_oldest_unsent_txn(service)
        if oldest is None:
            self.stranded_at.pop(service.id, None)
            return
        if self.stranded_at.get(service.id) != oldest.id:
            self.stranded_at[service.id] = oldest.id
            return
        logger.warning("Transaction %d for %s was stored but never sent; sending it again", oldest.id, service.id)
        self.stranded_at.pop(service.id, None)
        await store.set_appservice_state(service, ApplicationServiceState.DOWN)
        if service.id not in controller.recoverers:  # one may have started while the state was written
            controller.start_recoverer(service)
