"""Django's PostgreSQL backend with a read deadline: see :mod:`.base`."""
