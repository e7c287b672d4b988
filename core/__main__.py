"""``python -m maillage``: the same as the ``maillage`` command."""

from maillage.deploy.cli import main

raise SystemExit(main())
