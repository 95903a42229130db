import pytest

pytest.importorskip("django")
