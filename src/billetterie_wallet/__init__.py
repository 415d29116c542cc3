"""billetterie_wallet: the secure mobile-ticket wallet (TIXNGO's role in seed 004).

A deployable of its own: its own ASGI app, database, migrations and CLI. It talks to the box office
only over HTTP (the organizer API) and never imports :mod:`billetterie`.
"""

__version__ = "0.1.0"
