"""Sales: orders (files), operations, movements, tickets, payments and accounts."""
