"""The buyer's node: purchases placed on other stores' nodes over order messages (docs/protocol.md).

- ``models``: ``Purchase`` and its parts, ``PurchaseState``, ``PurchaseRequest``.
- ``store``: ``PurchaseStore`` over ``purchases.sqlite``.
- ``placing``: pricing a purchase from the signed catalog the directory holds.
- ``checks``: the escrow answer and payout checks done before anything is paid or signed.
- ``service``: ``Purchases`` (place, pay, release, dispute, review, message, apply, watch).
- ``views``: the JSON shapes of the API and the pages.
"""
