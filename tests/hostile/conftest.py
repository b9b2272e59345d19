"""The e2e fixtures (the fake Discord, the endpoints it patches) for the attacks here."""

from tests.e2e.conftest import fake, restore_discord_endpoints  # noqa: F401  (fixtures)
