"""The merchant's market: stores, listings, images, catalogs.

Every write goes through here, so cached snapshots are dropped exactly when
their store changes. Storage is passed in (typed by ``core.ports.Storage``);
nothing here touches files, sockets or the web. Read-modify-write operations
on one store run under that store's write lock, and each storage call is one
job on the storage thread, so concurrent requests cannot lose or resurrect
data. After each change the one ``observer`` hears a ``StoreChanged`` event,
outside the locks.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from ..core import addresses, events
from ..core.crypto import StoreKey
from ..core.errors import Conflict, NotFound, StorageError, ValidationError
from ..core.events import StoreChange, StoreChanged, StoreObserver
from ..core.models import Client, Listing, ListingFields, OnionOptions, Profile, StoreRecord, UploadedImage
from ..core.ports import Storage, TextIndexFactory
from ..hosting import client_auth
from . import catalog, images, textsearch
from . import listings as L
from . import profile as P
from . import reviews as R
from . import stores as S
from .limits import Limits
from .snapshots import Snapshots

__all__ = ["Limits", "Market"]

_IMAGE_NAME = re.compile(r"^([0-9a-f]{64})(\.thumb)?\.jpg$")


class Market:
    def __init__(
        self,
        storage: Storage,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.time,
        port_free: Callable[[int], Awaitable[bool]] | None = None,
        observer: StoreObserver = events.ignore,
        text_index: TextIndexFactory = textsearch.scan_index,
    ) -> None:
        """``port_free(port)`` tells whether a store could listen on ``port`` (passed in by the app).

        ``text_index`` builds each snapshot's search index (the app passes SQLite FTS5's).
        """
        self._storage = storage
        self.limits = limits
        self._clock = clock
        self._port_free = port_free
        self._observer = observer
        self._text_index = text_index
        self._keys: dict[str, StoreKey] = {}
        self._snapshots = Snapshots(self.now)
        self._write_locks: dict[str, asyncio.Lock] = {}
        # Decoding images is memory-hungry: one at a time.
        self._image_slot = asyncio.Semaphore(1)
        # Held by every write that must see all stores at once (names, ports, deletion).
        self._stores_lock = asyncio.Lock()

    def now(self) -> int:
        return int(self._clock())

    def _next_seq(self, current: int) -> int:
        """The catalog ``seq`` rule: above the last one, and at least the time (seconds) so it grows across resets."""
        return max(current + 1, self.now())

    def _writing(self, onion: str) -> asyncio.Lock:
        return self._write_locks.setdefault(onion, asyncio.Lock())

    async def _tell(self, change: StoreChange, record: StoreRecord) -> None:
        await self._observer(StoreChanged(change, record))

    # -- stores ----------------------------------------------------------
    async def create_store(self, data: object) -> StoreRecord:
        prof = P.validate(data)
        key = StoreKey.generate()
        lim = self.limits

        def choose(used: set[int]) -> int | None:
            return S.next_port(used, lim.store_port_base, lim.reserved_ports)

        async with self._stores_lock:
            await self._refuse_taken_name(prof["name"], None)
            record = await self._storage.create_store(key.onion, key.seed, prof, choose, now=self.now())
        self._keys[key.onion] = key
        await self._tell(StoreChange.CREATED, record)
        return record

    async def stores(self) -> list[StoreRecord]:
        return await self._storage.list_stores()

    async def store(self, ref: str) -> StoreRecord:
        return await self._storage.get_store(await self.resolve(ref))

    async def resolve(self, ref: str) -> str:
        """A store by full onion address, exact name or unique address prefix (6+); see ``stores.resolve``."""
        return S.resolve(await self._storage.list_stores(), ref)

    async def _refuse_taken_name(self, name: str, own: str | None) -> None:
        """A ValidationError if another store has this name, or the name begins another store's address."""
        S.refuse_taken_name(await self._storage.list_stores(), name, own)

    async def _checked_profile(self, onion: str, data: object) -> Profile:
        """The store's new profile from ``data``, with every check (fields, name taken); writes nothing."""
        current = (await self._storage.get_store(onion))["profile"]
        prof = P.validate(data, partial=current)
        if P.name_key(prof["name"]) != P.name_key(current.get("name", "")):
            await self._refuse_taken_name(prof["name"], onion)
        return prof

    async def update_profile(self, onion: str, data: object) -> Profile:
        async with self._stores_lock, self._writing(onion):
            prof = await self._checked_profile(onion, data)
            await self._storage.update_profile(onion, prof, self._next_seq)
            self._snapshots.changed(onion)
            record = await self._storage.get_store(onion)
        await self._tell(StoreChange.PROFILE_CHANGED, record)
        return prof

    async def update_store(self, onion: str, data: object) -> StoreRecord:
        """Profile fields and/or ``port``; every check runs before either is written. Returns the record."""
        if not isinstance(data, dict) or "port" not in data:
            await self.update_profile(onion, data)
            return await self._storage.get_store(onion)
        profile = {k: v for k, v in data.items() if k != "port"}
        async with self._stores_lock:
            await self._check_port(onion, S.port_value(data["port"]))
            if profile:
                await self._checked_profile(onion, profile)
        if profile:
            await self.update_profile(onion, profile)
        return await self.set_port(onion, data["port"])

    async def _check_port(self, onion: str, wanted: int | None) -> None:
        """A ValidationError when ``wanted`` is the admin's port, another store's, or held by another program."""
        if wanted is None:
            return
        records = await self._storage.list_stores()
        S.refuse_taken_port(records, onion, wanted, self.limits.reserved_ports)
        current = next((s["port"] for s in records if s["onion"] == onion), None)
        if wanted != current and self._port_free is not None and not await self._port_free(wanted):
            raise ValidationError(
                {"port": f"{wanted} is in use by another program on this machine; stop it or choose another port"}
            )

    async def set_port(self, onion: str, value: object) -> StoreRecord:
        """Move the store's listener to ``value``: a port (1024-65535) or ``"auto"``.

        ``"auto"`` picks the lowest free port from ``store_port_base`` (with a
        base of 0: a free port at each start). A port is checked before it is
        saved (see ``_check_port``), so a running store is never moved to a
        port it cannot listen on. Returns the store record; a PORT_CHANGED
        event (only when the port changed) lets the app move a running listener.
        """
        wanted, lim = S.port_value(value), self.limits

        def choose(used: set[int]) -> int | None:
            return wanted if wanted is not None else S.next_port(used, lim.store_port_base, lim.reserved_ports)

        async with self._stores_lock, self._writing(onion):
            await self._check_port(onion, wanted)
            before = (await self._storage.get_store(onion))["port"]
            record = await self._storage.set_port(onion, choose)
        if record["port"] != before:
            await self._tell(StoreChange.PORT_CHANGED, record)
        return record

    async def delete_store(self, onion: str, confirm: object) -> S.DeletedStore:
        """Move the store's folder (key, listings, images) to ``deleted/``; its listener and onion stop.

        ``confirm`` must be the store's full onion address, so a mistyped name
        or prefix never deletes a store.
        """
        if not isinstance(confirm, str) or addresses.normalize(confirm) != onion:
            raise ValidationError({"confirm": "must be the store's full onion address, to confirm the deletion"})
        async with self._stores_lock, self._writing(onion):
            record = await self._storage.get_store(onion)
            moved = await self._storage.delete_store(onion)
            self._keys.pop(onion, None)
            self._snapshots.forget(onion)
        self._write_locks.pop(onion, None)
        await self._tell(StoreChange.DELETED, record)
        return S.DeletedStore(onion=onion, name=record["profile"]["name"], moved_to=moved)

    # -- onion-service access ----------------------------------------------
    @staticmethod
    def access_options(record: StoreRecord) -> OnionOptions:
        return client_auth.of_store(record)

    async def _change_access(self, onion: str, change: Callable[[OnionOptions], OnionOptions]) -> OnionOptions:
        async with self._writing(onion):
            options = change(self.access_options(await self._storage.get_store(onion)))
            await self._storage.set_onion_service(onion, options)
            record = await self._storage.get_store(onion)
        await self._tell(StoreChange.ACCESS_CHANGED, record)
        return options

    async def set_access(self, onion: str, data: object) -> OnionOptions:
        """Change invite-only / max_streams / pow; turning invite-only on with no keys makes the first one."""

        def change(current: OnionOptions) -> OnionOptions:
            options = client_auth.validate_options(data, current)
            if options["invite_only"] and not options["clients"]:
                options, _ = client_auth.add_client(options, {"name": "first invitation"}, now=self.now())
            return options

        return await self._change_access(onion, change)

    async def add_client(self, onion: str, data: object) -> Client:
        """A new client key; the result includes the private key to hand to the invited buyer."""
        made: list[Client] = []

        def change(current: OnionOptions) -> OnionOptions:
            options, client = client_auth.add_client(current, data, now=self.now())
            made.append(client)
            return options

        await self._change_access(onion, change)
        return made[0]

    async def remove_client(self, onion: str, client_id: str) -> None:
        await self._change_access(onion, lambda current: client_auth.remove_client(current, client_id))

    async def key(self, onion: str) -> StoreKey:
        if onion not in self._keys:
            key = StoreKey(await self._storage.read_key(onion))
            if key.onion != onion:
                raise StorageError(f"store {onion}: its key file belongs to another address; restore it from backup")
            self._keys[onion] = key
        return self._keys[onion]

    # -- listings --------------------------------------------------------
    async def listings(self, onion: str) -> list[Listing]:
        return catalog.newest_first(await self._storage.listings(onion))

    async def listing(self, onion: str, listing_id: str) -> Listing:
        item = await self._storage.listing(onion, listing_id)
        if item is None:
            raise NotFound(f"no listing {listing_id!r} in this store")
        return item

    async def add_listings(self, onion: str, inputs: Sequence[object]) -> list[Listing]:
        """Validate all, then store all in one atomic write (or nothing).

        Validation runs in a worker thread: a batch of thousands of listings
        (CSV import) must not stall the storefronts sharing this event loop.

        A listing may carry an ``import_key`` (CSV import: the row's key); one
        whose key the store already holds is skipped, atomically with the
        write, so a batch sent again is harmless. Returns the listings stored:
        ``len(inputs) - len(result)`` were skipped.
        """
        out = await asyncio.to_thread(L.validate_new, inputs, max_images=self.limits.max_images, now=self.now())
        await self._check_images(onion, out)
        skipped = set((await self._storage.put_listings(onion, out, self._next_seq)).skipped)
        if len(skipped) < len(out):
            await self._catalog_changed(onion)
        return [x for x in out if x["id"] not in skipped]

    async def add_listing(self, onion: str, data: object) -> Listing:
        """One new listing; Conflict if its ``import_key`` is already stored."""
        stored = await self.add_listings(onion, [data])
        if not stored:
            key = data.get("import_key") if isinstance(data, dict) else None
            raise Conflict(f"a listing with import_key {key!r} is already in this store")
        return stored[0]

    async def update_listing(self, onion: str, listing_id: str, data: object) -> Listing:
        async with self._writing(onion):
            current = await self.listing(onion, listing_id)
            clean = L.validate(data, max_images=self.limits.max_images, now=self.now())
            updated = await self._replace(onion, current, clean)
        await self._catalog_changed(onion)
        return updated

    async def _replace(self, onion: str, current: Listing, clean: ListingFields) -> Listing:
        updated = L.edited(current, clean, self.now())
        await self._check_images(onion, [updated])
        await self._storage.replace_listing(onion, updated, self._next_seq)  # NotFound if deleted meanwhile
        return updated

    async def set_inventory(self, onion: str, stock: Mapping[str, Mapping[str, object]]) -> list[Listing]:
        """``stock``: listing id -> {SKU (``""`` without variants): count or None}.

        Every entry is checked before anything is written; unchanged listings
        are left alone. Returns the listings that changed.
        """
        async with self._writing(onion):
            by_id = {x["id"]: x for x in await self._storage.listings(onion)}
            errors: dict[str, str] = {}
            changed = []
            for listing_id, counts in stock.items():
                item = by_id.get(listing_id)
                if item is None:
                    errors[listing_id] = "no such listing"
                    continue
                updated = L.with_stock(item, counts, errors)
                if updated is not None and updated != item:
                    changed.append(updated)
            if errors:
                raise ValidationError(errors)
            now = self.now()
            for item in changed:
                item["updated_at"] = now
            if changed:
                await self._storage.put_listings(onion, changed, self._next_seq)
        if changed:
            await self._catalog_changed(onion)
        return changed

    async def remove_listing(self, onion: str, listing_id: str) -> None:
        async with self._writing(onion):
            await self._storage.delete_listing(onion, listing_id, self._next_seq)
        await self._catalog_changed(onion)

    # -- images ----------------------------------------------------------
    async def add_image(self, onion: str, data: bytes) -> UploadedImage:
        await self._storage.get_store(onion)
        lim = self.limits
        async with self._image_slot:
            img = await asyncio.to_thread(
                images.process, data, max_bytes=lim.max_image_bytes, max_side=lim.max_image_side
            )
        await self._storage.put_image(onion, f"{img.id}.thumb.jpg", img.thumb)
        await self._storage.put_image(onion, f"{img.id}.jpg", img.full)
        return UploadedImage(id=img.id, path=f"/images/{img.id}.jpg", width=img.width, height=img.height)

    def image_path(self, onion: str, name: str, *, published: frozenset[str] | None = None) -> Path:
        """Where an image of this store is. With ``published``, only those image ids."""
        match = _IMAGE_NAME.match(name)
        if not match or (published is not None and match.group(1) not in published):
            raise NotFound("no such image")
        return self._storage.image_path(onion, name)

    async def _check_images(self, onion: str, items: Sequence[Listing]) -> None:
        missing = await self._storage.missing_images(onion, {f"{i}.jpg" for x in items for i in x["images"]})
        if missing:
            raise ValidationError({"images": f"image {sorted(missing)[0][:12]}… was never uploaded to this store"})

    # -- reviews ---------------------------------------------------------
    async def add_review(self, onion: str, env: Mapping[str, object] | bytes) -> None:
        """Keep a buyer's signed review (its envelope, as an object or its JSON bytes) in the store's catalog.

        The rules are ``market.reviews``'s: one per signer, a higher seq replaces, the newest 1,000 kept.

        Raises ValidationError / SignatureError for a review that does not verify or names another store;
        a review no newer than the one held for its signer is ignored.
        """
        review = R.check(onion, env, now=self.now())
        async with self._writing(onion):
            changed = await self._storage.update_reviews(
                onion, lambda held: R.merged(held, review, now=self.now()), self._next_seq
            )
        if changed:
            await self._catalog_changed(onion)

    # -- catalog ---------------------------------------------------------
    async def _catalog_changed(self, onion: str) -> None:
        """Drop the store's snapshot and tell the observer (with the record carrying the new seq)."""
        self._snapshots.changed(onion)
        try:
            record = await self._storage.get_store(onion)
        except NotFound:  # deleted since the write, which stands: DELETED was (or is being) told
            return
        await self._tell(StoreChange.CATALOG_CHANGED, record)

    async def snapshot(self, onion: str) -> catalog.Snapshot:
        """The current signed catalog and browse data; rebuilt after any change.

        Each build seals a new envelope with its own ``seq`` (also after a
        restart, an expiry or at half the TTL), so no two different envelopes
        of a store ever share a ``seq``.
        """

        async def build() -> catalog.Snapshot:
            key = await self.key(onion)
            record, items = await self._storage.seal_data(onion, self._next_seq)
            held = await self._storage.reviews(onion)
            profile, seq, ttl, index = record["profile"], record["seq"], self.limits.catalog_ttl, self._text_index
            return await asyncio.to_thread(
                catalog.build, key, profile, items, seq=seq, now=self.now(), ttl=ttl, text_index=index, reviews=held
            )

        return await self._snapshots.get(onion, build)
