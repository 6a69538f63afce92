"""State derived from a replicated map, tested by
:class:`~pulse_trio.testing.machines.MapMachine`.

An inventory keeps, per SKU, the quantity in stock in a replicated map; each process keeps a
derived view (the quantities as numbers) up to date from its replica's change
notifications. Writers update the map concurrently, notifications get lost and
subscriptions die; every process's view must still converge to the map. A view updated
incrementally that ignores deletes keeps SKUs that are gone; the machine finds it and
shrinks the run to a few steps; the view rebuilt from the replica passes.

Run: ``pytest examples/testing/test_map_inventory.py`` (needs ``pulse-trio[testing]``).
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from pulse_trio import rmap
from pulse_trio.testing.machines import MapMachine

# --- the application ------------------------------------------------------------------------


class StockView:
    """The quantities in stock, as numbers, kept up to date from a replica."""

    def __init__(self) -> None:
        self.stock: dict[str, int] = {}

    async def follow(self, replica: rmap.Map) -> None:
        """Update the view on every change of ``replica`` (until it is left)."""
        async with replica.subscribe() as changes:
            self.update(replica.map())
            async for _ in changes:
                self.update(replica.map())

    def update(self, content: dict[str, str]) -> None:
        """Rebuild the view from the map's content."""
        self.stock = {sku: int(quantity) for sku, quantity in content.items()}


class IncrementalStockView(StockView):
    """BUG (planted): updates the SKUs present in the map, never removes deleted ones."""

    def update(self, content: dict[str, str]) -> None:
        for sku, quantity in content.items():
            self.stock[sku] = int(quantity)


# --- the machine ----------------------------------------------------------------------------


class Inventory(MapMachine):
    """Every process's view converges to the quantities in the map."""

    keys = st.sampled_from(["apple", "pear", "plum"])
    values = st.integers(0, 99).map(str)
    view_class: type[StockView] = StockView
    derive_within = 0.5  # the views follow at once: failing examples stay short

    def __init__(self) -> None:
        super().__init__()
        self.views = [self.view_class() for _ in range(self.replica_count)]

    async def follow(self, index: int, replica: rmap.Map) -> None:
        await self.views[index].follow(replica)

    def derived(self, index: int) -> object:
        return self.views[index].stock

    def expected(self, content: dict[str, str]) -> object:
        return {sku: int(quantity) for sku, quantity in content.items()}


class IncrementalInventory(Inventory):
    """The same machine over the buggy view."""

    view_class = IncrementalStockView


def test_views_converge(pulse_server: str) -> None:
    Inventory.run(pulse_server, max_examples=5, steps=8)


def test_the_machine_finds_the_stale_view(pulse_server: str) -> None:
    # A real concurrent system: whether the stale view shows up at a given step depends on
    # timing, so Hypothesis may fail to reproduce its first failure on a replay. It then
    # raises FlakyFailure, an exception group holding the AssertionError: the bug was found
    # either way.
    with pytest.raises((AssertionError, FlakyFailure)) as failure:
        IncrementalInventory.run(pulse_server, max_examples=20, steps=8)
    error: BaseException = failure.value
    if isinstance(error, FlakyFailure):
        error = next(e for e in error.exceptions if isinstance(e, AssertionError))
    assert "derived state" in str(error)
    steps = "\n".join(getattr(error, "__notes__", []))
    print(steps)  # the shortest failing sequence of steps that Hypothesis found
    assert "delete" in steps or "concurrent_writes" in steps
