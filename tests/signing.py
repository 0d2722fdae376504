"""A fleet signing key for end-to-end tests: made by the real espsecure, images signed by it
through tools/sign_image.py (espsecure sign-data). Import `fleet_key` as a fixture."""
import pytest

import sign_image
from test_secure_boot import Key


class FleetKey(Key):
    def sign(self, image):
        return sign_image.sign_bytes(image, [str(self.pem)])

    def update_config(self, required=True):
        """The device config's `update` section that trusts this key."""
        return {"require_signature": required, "trusted_keys": [self.digest]}


@pytest.fixture(scope="session")
def fleet_key(tmp_path_factory):
    return FleetKey(tmp_path_factory.mktemp("fleet-key"), "fleet")
