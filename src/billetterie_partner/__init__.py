"""billetterie's partner SDK: what a website or a reseller runs against the box office.

It talks to the box office over HTTP only and never imports ``billetterie``.
"""
