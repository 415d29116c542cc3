"""Catalog refusals."""

from __future__ import annotations

from billetterie.shared.errors import DomainError, NotFound


class UnknownInstitution(NotFound):
    code = "error.catalog.unknown_institution"


class UnknownProduct(NotFound):
    code = "error.catalog.unknown_product"


class UnknownSeason(NotFound):
    code = "error.catalog.unknown_season"


class UnknownPointOfSale(NotFound):
    code = "error.catalog.unknown_point_of_sale"


class CatalogNotBuilt(DomainError):
    """No snapshot exists for a channel: its institution has never been imported."""

    code = "error.catalog.not_built"
    http_status = 404
