"""Who is calling: operators (virtual, bound to a point of sale) and their API tokens."""
