"""The ticket shop: server-rendered pages per point of sale (``/shop/<code>/...``) and the
redirect API (``/api/1/redirect/...``) the institution's website links into."""
