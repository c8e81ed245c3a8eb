"""The market's limits, from the settings table."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import Config


@dataclass(frozen=True)
class Limits:
    """The market's limits; their defaults live in the settings table (``core.config``)."""

    catalog_ttl: int
    max_images: int
    max_image_bytes: int
    max_image_side: int
    store_port_base: int
    reserved_ports: frozenset[int]

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(
            catalog_ttl=config.catalog_ttl,
            max_images=config.max_images,
            max_image_bytes=config.max_image_bytes,
            max_image_side=config.max_image_side,
            store_port_base=config.store_port_base,
            reserved_ports=frozenset({config.admin_port}),
        )
