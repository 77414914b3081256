"""A tiny stock-keeping program for a corner shop.

Items are kept in memory, keyed by SKU. The shop can receive deliveries, sell items,
and print a report of what is running low.
"""

import json
import sys
from dataclasses import dataclass, field


LOW_STOCK = 5


@dataclass
class Item:
    """One product on the shelves."""

    sku: str
    name: str
    price_cents: int
    quantity: int = 0
    tags: list = field(default_factory=list)

    def value_cents(self):
        """What the items of this kind on the shelf are worth together."""
        return self.price_cents * self.quantity

    def is_low(self):
        return self.quantity < LOW_STOCK


class OutOfStock(Exception):
    """Raised when a sale asks for more than the shelf holds."""

    def __init__(self, item, wanted):
        super().__init__(f"only {item.quantity} of {item.name} left, {wanted} wanted")
        self.item = item
        self.wanted = wanted


class Inventory:
    """All items of the shop, with the operations a shopkeeper needs."""

    def __init__(self):
        self.items = {}
        self.sales_cents = 0

    def add(self, item):
        if item.sku in self.items:
            raise ValueError(f"duplicate sku {item.sku}")
        self.items[item.sku] = item

    def receive(self, sku, quantity):
        """Book a delivery of `quantity` units."""
        if quantity <= 0:
            raise ValueError("a delivery must bring at least one unit")
        self.items[sku].quantity += quantity

    def sell(self, sku, quantity=1):
        item = self.items[sku]
        if item.quantity < quantity:
            raise OutOfStock(item, quantity)
        item.quantity -= quantity
        self.sales_cents += item.price_cents * quantity
        return item.price_cents * quantity

    def low_stock(self):
        return sorted(
            (item for item in self.items.values() if item.is_low()),
            key=lambda item: item.quantity,
        )

    def total_value_cents(self):
        return sum(item.value_cents() for item in self.items.values())

    def to_json(self):
        rows = [
            {"sku": i.sku, "name": i.name, "price_cents": i.price_cents, "quantity": i.quantity}
            for i in self.items.values()
        ]
        return json.dumps(rows, indent=2)


def format_cents(cents):
    """Render an amount of cents as dollars, e.g. 1234 -> '$12.34'."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}${cents // 100}.{cents % 100:02d}"


def report(inventory, out=sys.stdout):
    print(f"{len(inventory.items)} kinds of item", file=out)
    print(f"stock worth {format_cents(inventory.total_value_cents())}", file=out)
    print(f"sales so far {format_cents(inventory.sales_cents)}", file=out)
    for item in inventory.low_stock():
        print(f"  low: {item.name} ({item.quantity} left)", file=out)


def main():
    shop = Inventory()
    shop.add(Item("A1", "apples", 45, 30, ["fruit"]))
    shop.add(Item("B7", "bread", 250, 4, ["bakery"]))
    shop.add(Item("M2", "milk", 120, 12, ["dairy"]))
    shop.sell("A1", 6)
    shop.sell("M2", 9)
    try:
        shop.sell("B7", 10)
    except OutOfStock as err:
        print(f"cannot sell: {err}")
    shop.receive("B7", 20)
    report(shop)


if __name__ == "__main__":
    main()
