import os
import shutil

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


CHROMIUM = next((p for p in (os.environ.get("CLAMU_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)
"""Debian's ``chromium`` (``scripts/setup.sh`` installs it where it can; ``$CLAMU_CHROMIUM``
overrides): the browser tests never download one."""


@pytest.fixture
def browser():
    """A headless Chromium driven by Playwright, closed after the test; the test is skipped,
    with the reason, where either is missing."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (as root: apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()
