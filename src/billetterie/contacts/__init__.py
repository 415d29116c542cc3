"""Contacts: individuals and structures, addresses, criteria, legal authorizations, ticket
holders, and the contact's login (email and password)."""
