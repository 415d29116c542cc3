"""Card payments through a provider port (hosted page, webhook confirmation, refunds)."""
