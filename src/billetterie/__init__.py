"""billetterie: an open-source box office speaking the SecuTix S-360 partner protocol."""

__version__ = "0.1.0"
