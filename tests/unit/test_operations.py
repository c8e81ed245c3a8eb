"""The operation table: the API routes and the CLI's remote requests are derived from it."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from node import operations as ops
from node.cli.backends import RemoteError, _api_error, _request
from node.core import errors
from node.web import api


def _routes() -> set[tuple[str, str]]:
    app = web.Application()
    api.add_routes(app)
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}


def test_every_operation_has_exactly_its_route():
    routes = _routes()
    derived = {(op.method, ops.PREFIX + op.path) for op in ops.TABLE}
    derived |= {("HEAD", path) for method, path in derived if method == "GET"}
    assert derived <= routes
    catalog = "/api/v1/stores/{store}/catalog"  # web only: the signed bytes as published
    assert routes - derived == {("GET", catalog), ("HEAD", catalog)}


@pytest.mark.parametrize("op", ops.TABLE, ids=lambda op: op.name)
def test_path_parameters_are_the_inputs_fields(op):
    in_path = re.findall(r"{(\w+)}", op.path)
    assert in_path == [p for p in op.params if p not in ("body", "data", *op.query_params)]
    assert not {"body", "data"} <= set(op.params)
    assert not op.query_params or op.method == "GET"  # only a GET takes its input from the query string
    assert (op.status == 204) == (op.call.__annotations__["return"] == "None")


def test_names_are_unique_and_found_by_name():
    assert len(ops.BY_NAME) == len(ops.TABLE)
    assert ops.BY_NAME["list_listings"] is ops.listings.list_listings


def test_query_parameters_go_to_the_query_string_and_come_back():
    params = ops.discovery.SearchParams(q='tea "near(', limit="5")
    path, kw = _request(ops.discovery.search, params)
    assert path == "/search" and kw == {"params": {"q": 'tea "near(', "limit": "5"}}  # empty ones left out
    assert ops.discovery.search.query_params[:2] == ["q", "limit"] and not ops.discovery.search.path_params


def test_search_parameters_are_checked_all_at_once():
    from node.core.errors import ValidationError

    bad = ops.discovery.SearchParams(limit="0", offset="x", max_price_sat="-1", ships_to="Germany", store="nope")
    with pytest.raises(ValidationError) as exc:
        ops.discovery.search_query(bad)
    assert set(exc.value.fields) == {"limit", "offset", "max_price_sat", "ships_to", "store"}
    query = ops.discovery.search_query(ops.discovery.SearchParams(q="tea", ships_to="de", max_price_sat="900"))
    assert (query.limit, query.offset, query.ships_to, query.max_price_sat) == (20, 0, "DE", 900)


def test_remote_request_is_built_from_the_table():
    path, kw = _request(ops.listings.update_listing, ops.listings.ListingBody("Tea House/é", "abc", {"title": "x"}))
    assert path == "/stores/Tea%20House%2F%C3%A9/listings/abc" and kw == {"json": {"title": "x"}}
    path, kw = _request(ops.listings.add_image, ops.listings.ImageUpload("s", b"\xff"))
    assert path == "/stores/s/images" and kw == {"data": b"\xff"}
    assert _request(ops.stores.list_stores, ops.NoInput()) == ("/stores", {})


def test_api_errors_become_the_same_class_with_the_same_code():
    for cls in (errors.NotFound, errors.Conflict, errors.StorageError, errors.Unauthorized, errors.BadRequest):
        exc = _api_error(cls.status, {"error": "why", "code": cls.code})
        assert type(exc) is cls and exc.code == cls.code and exc.message == "why"
    exc = _api_error(422, {"error": "x", "code": "invalid", "fields": {"title": "empty"}, "summary": "1 problem"})
    assert isinstance(exc, errors.ValidationError) and exc.fields == {"title": "empty"} and exc.headline == "1 problem"
    exc = _api_error(405, {"error": "That method is not allowed here.", "code": "http_error"})
    assert type(exc) is RemoteError and exc.status == 405
    assert type(_api_error(502, "<html>")) is RemoteError
