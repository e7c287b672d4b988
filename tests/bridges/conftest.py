"""The email bridge's fixtures (``bridge``, ``bridge_process``, ``dns_server``) live in the root
conftest: the portal's tests use them too, and a session fixture imported into two places
would start two bridges."""
