"""Building blocks every context uses: errors, clock, money, text, database."""
