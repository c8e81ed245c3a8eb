"""Signed, acknowledged, store-and-forward order messages between two nodes (docs/protocol.md "Order messages").

- ``wire``: envelope types, ids, body checks, acks and polls.
- ``boxes``: NaCl boxes between two per-order ed25519 keys (shipping addresses, free text).
- ``models``: ``OutMessage``, ``InMessage``, ``Delivery``, ``Received``, ``ApplyError``.
- ``mailbox``: the persisted outbox and inbox (``messages.sqlite``): seq, dedupe, in-order apply, backoff;
  its SQL is in ``store`` (outbox, apply cursors) and ``inbound`` (receiving: checks and the order rules),
  fast signature checks in ``verify``, shared commits in ``commits``.
- ``courier``: the buyer side's sender: posts to the store onion, records acks, polls for answers.
"""
