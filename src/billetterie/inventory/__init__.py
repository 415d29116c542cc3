"""Inventory: stock counters, numbered seats per performance, holds, best-available, the
availability levels and the change feed."""
