# The store's empty database of each backend, for the operational checks run against it.
from tests.store.conftest import engine  # noqa: F401 (a fixture, found by its name)
