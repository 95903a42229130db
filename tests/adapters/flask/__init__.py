import pytest

pytest.importorskip("flask")
pytest.importorskip("flask_sqlalchemy")
pytest.importorskip("flask_login")
