"""The catalog: institution, channels, points of sale, seasons, products, venues, prices."""
