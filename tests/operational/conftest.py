# A server's `billing`, subscribed `ops` and notification endpoint, for the tests watching them.
from tests.operational.observed import endpoint, sinks  # noqa: F401 (fixtures, by their names)

# The store's empty database of each backend, for the operational checks run against it.
from tests.store.conftest import engine  # noqa: F401 (a fixture, found by its name)
