"""The Django suite lives in ``project/`` and runs in a subprocess per database (Django configures one set
of databases per process): ``test_django_backends.py`` starts them. Only those subprocesses, which set
``AUDIT_DJANGO_INNER``, collect ``project/`` themselves."""

import os

collect_ignore = [] if os.environ.get("AUDIT_DJANGO_INNER") else ["project"]
