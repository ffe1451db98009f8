"""Hand built messages to a transport, recording each step in the delivery log: one courier per
connection (courier.py), a run's couriers side by side (couriers.py), and the breaker they share
(breaker.py). courier.py says how each step is recorded.

Before them, the messages: a run's digests ranked, rendered and built a chunk at a time
(building.py), each composed as an email (compose.py); queued.py sends again what earlier runs left
queued, and held.py keeps the clicks and sends the database could not take.
"""

from newsletter.deliver.breaker import FAILED_IN_A_ROW, Breaker
from newsletter.deliver.courier import GIVE_UP_AFTER, Courier
from newsletter.deliver.couriers import Couriers
from newsletter.report import STOPPED

__all__ = ["FAILED_IN_A_ROW", "GIVE_UP_AFTER", "STOPPED", "Breaker", "Courier", "Couriers"]
