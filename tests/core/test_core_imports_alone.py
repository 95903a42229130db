import subprocess
import sys


def test_the_core_imports_no_framework():
    code = (
        "import sys, audit_middleware, audit_middleware.testing, audit_middleware.export, "
        "audit_middleware.recorder, audit_middleware.store, audit_middleware.cli\n"
        "bad = [m for m in ('flask', 'django', 'sqlalchemy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
