"""Who is shed when the door is overloaded: the caller holding more than its share.

Creates in flight are counted per caller (a configured bearer token; every other request
is one caller together). While the door is not overloaded, every create passes, so a
caller alone may use everything. Under overload (creates in flight at
`max_creates_in_flight`, or the event loop late), a create passes only when its caller
holds fewer creates in flight than its fair share of `min(in flight, capacity)` split
between the callers with creates in flight (itself included). The caller that caused the
overload holds more than its share and is refused; a quiet tenant beside it, holding
little or nothing, still gets through. A caller alone under overload holds everything in
flight, more than its share of it, and is refused as before.

Those that pass beyond the capacity are bounded: nothing passes once twice the capacity
is in flight. The decision is a few integer operations (the 429 must stay cheap under a
flood).
"""

from __future__ import annotations

from collections.abc import Hashable


class CreateShares:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.total = 0
        self.held: dict[Hashable, int] = {}  # only callers with creates in flight

    def admits(self, caller: Hashable, late: bool) -> bool:
        total = self.total
        if not late and total < self.capacity:
            return True
        if total >= 2 * self.capacity:
            return False
        mine = self.held.get(caller, 0)
        callers = len(self.held) + (0 if mine else 1)
        # mine < min(total, capacity) / callers, without rounding the share to 0
        return mine * callers < min(total, self.capacity)

    def enter(self, caller: Hashable) -> None:
        self.total += 1
        self.held[caller] = self.held.get(caller, 0) + 1

    def leave(self, caller: Hashable) -> None:
        self.total -= 1
        left = self.held[caller] - 1
        if left:
            self.held[caller] = left
        else:
            del self.held[caller]
