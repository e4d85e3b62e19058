import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from clamu_helpers.settings.synthetic import SyntheticSetting  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """8 tasks of Gaussian blobs with 2 labels each; finetunes take milliseconds (built by
    get_setting, so it carries the recipe worker processes rebuild it from)."""
    from clamu_helpers.settings import get_setting
    return get_setting("synthetic", "smoke", 0, tasks=8)


@pytest.fixture(scope="session")
def smoke_images():
    """The embedded label-subset image setting at the smoke profile (12 tasks)."""
    from clamu_helpers.settings import get_setting
    return get_setting("images-label-subsets", "smoke")
