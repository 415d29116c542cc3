"""Webhooks: the box office calls partners' URLs when orders close or contacts change."""
