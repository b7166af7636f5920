"""From the outbox to the broker: a pipelined publishing session over ``MqttClient``.

``Publisher.session`` is what ``MqttLink.run`` calls with each connected client (the lean
one: ``MqttLink(config.mqtt, "collector")``). It first queues the fleet's
current info and status again (``republish``, after what is queued: a broker that lost its
retained messages is whole after one reconnect), then hands messages to the client with
``publish_nowait``, up to ``max_inflight`` unsettled at once and never more than the
broker's Receive Maximum allows (``send_quota``), and takes a message out of the outbox for
good only once the broker answered it (``Delivery.settled``; a refusal is counted and
logged, not sent again). When the connection drops, the unsettled messages go back to the
front of the outbox, in order, and go out again after the reconnect (at least once, as
QoS 1 promises).

The window is kept full from the acknowledgements themselves: ``on_settled``, called as
each PUBACK is read, hands the next message to the client at once, so a window costs two
turns of the event loop (write, read) rather than three (a wake-up of the session between
them), which is what bounds the rate when a thousand polls at once make each turn long.
The session task itself starts the flow in batches when messages arrive in an empty
window, and ``wait_closed`` tells it when the connection died while nothing was to send.
One ``publish_nowait`` per message and no task, future or wake-up of its own: the client
writes what a turn of the event loop handed it as one write, and PUBACKs arrive in order.

What the session receives (``listen``: the ``listener``'s subscriptions) is handled in a
task of its own beside the publishing, so the publish path stays as it is; when that task
fails (the connection is gone, a subscription refused) the session ends with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from minerwatch.collector.outbox import Outbox, Outgoing
from minerwatch.shared.errors import one_line
from minerwatch.shared.mqtt import Delivery, MqttClient, MqttError
from minerwatch.shared.mqtt.packets import reason_text

log = logging.getLogger(__name__)

#: Messages handed to the client per step before other tasks get the loop again.
BATCH = 512
#: Log the first of these problems and then every this many.
LOG_EVERY = 1000

Inflight = deque[tuple[Outgoing, Delivery]]


class Publisher:
    """Drains the outbox into a connected client; run as ``MqttLink.run(publisher.session)``."""

    def __init__(self, outbox: Outbox, base_topic: str, *, max_inflight: int = 1024,
                 republish: Callable[[], Iterable[Outgoing]] | None = None,
                 listen: Callable[[MqttClient], Awaitable[None]] | None = None) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.outbox = outbox
        self.base = base_topic
        self.max_inflight = max_inflight
        #: What to queue again at the start of every session: the current retained state.
        self.republish = republish
        #: Run beside the publishing for the session's lifetime: what it subscribes to.
        self.listen = listen
        #: Messages the broker answered (out of the outbox for good), and of those the ones
        #: it refused (an ACL); messages it could never take (over its limits): dropped.
        self.published = 0
        self.refused = 0
        self.unsendable = 0
        #: The most messages unsettled at once.
        self.most_inflight = 0

    async def session(self, client: MqttClient) -> None:
        """Publish until the connection drops (raises MqttError) or the task is cancelled."""
        wake = asyncio.Event()
        inflight: Inflight = deque()

        def settled(_: Delivery) -> None:
            # In the client's receive path: refill the window at once. Waking the session
            # for it would cost a turn of the event loop per window, and a busy loop (a
            # thousand polls at once) turns only a few times a second.
            try:
                self._settle(inflight)
                self._send(client, inflight)
            except MqttError:
                pass  # the connection is gone: the session notices and ends
            except Exception:  # never into the client's receive path
                log.exception("publishing from the acknowledgement failed")
            wake.set()

        client.on_settled = settled
        closed = asyncio.ensure_future(client.wait_closed())
        closed.add_done_callback(lambda _: wake.set())
        listening: asyncio.Future[None] | None = None
        if self.listen is not None:
            listening = asyncio.ensure_future(self.listen(client))
            listening.add_done_callback(lambda _: wake.set())
        if self.republish is not None:
            self.outbox.refresh(self.republish())
        self.outbox.report_drops()
        try:
            while True:
                if closed.done():
                    raise closed.result()  # the reason the connection is gone
                if listening is not None and listening.done():
                    listening.result()  # raises what ended it
                    listening = None  # it returned: nothing more to hear
                self._settle(inflight)
                sent = self._send(client, inflight)
                if sent == BATCH:  # more to send: let the polls and the socket run first
                    await asyncio.sleep(0)
                    continue
                wake.clear()
                if len(inflight) < self.max_inflight and client.send_quota > 0:
                    self.outbox.notify(wake)
                await wake.wait()
        finally:
            client.on_settled = None
            closed.cancel()
            if listening is not None and not listening.done():
                listening.cancel()
                with contextlib.suppress(BaseException):
                    await listening
            self._give_back(inflight)

    def _send(self, client: MqttClient, inflight: Inflight) -> int:
        """Hand up to ``BATCH`` messages to the client, as far as there is room."""
        outbox = self.outbox
        room = min(BATCH, self.max_inflight - len(inflight), client.send_quota)
        sent = 0
        while sent < room and len(outbox):
            item = outbox.pop()
            try:
                delivery = client.publish_nowait(item.topic(self.base), item.payload(),
                                                 retain=True)
            except MqttError:
                outbox.put_front([item])  # the connection is gone: it goes out next time
                raise
            except Exception as exc:  # over the broker's limits (BrokerLimitError), or a
                self._unsendable(item, exc)  # message that cannot be encoded: it never will
                continue
            inflight.append((item, delivery))
            sent += 1
        if len(inflight) > self.most_inflight:
            self.most_inflight = len(inflight)
        return sent

    def _settle(self, inflight: Inflight) -> None:
        """Messages the broker answered, oldest first, leave the outbox for good."""
        while inflight and inflight[0][1].settled:
            _, delivery = inflight.popleft()
            self.published += 1
            if delivery.refused:
                self._refused(delivery)

    def _refused(self, delivery: Delivery) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % LOG_EVERY == 0:
            assert delivery.reason is not None
            log.warning("the broker refused %d message(s) (last: %s on %s); check its ACL",
                        self.refused, reason_text(delivery.reason), delivery.topic)

    def _unsendable(self, item: Outgoing, error: Exception) -> None:
        self.unsendable += 1
        if self.unsendable == 1 or self.unsendable % LOG_EVERY == 0:
            log.error("cannot publish %s for %s (%d dropped so far): %s: %s", item.kind,
                      item.miner_id, self.unsendable, type(error).__name__, one_line(error))

    def _give_back(self, inflight: Inflight) -> None:
        """Unsettled messages return to the front of the outbox, oldest first."""
        self._settle(inflight)
        unsettled: list[Outgoing] = []
        for item, delivery in inflight:
            if delivery.settled:  # answered out of order: done with too
                self.published += 1
                if delivery.refused:
                    self._refused(delivery)
            else:
                unsettled.append(item)
        if unsettled:
            log.info("session ended: %d unacknowledged message(s) go back to the outbox",
                     len(unsettled))
            self.outbox.put_front(unsettled)
