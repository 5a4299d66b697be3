# The store's empty database of each backend, for operators' actions run against it.
from tests.store.conftest import engine  # noqa: F401 (a fixture, found by its name)
