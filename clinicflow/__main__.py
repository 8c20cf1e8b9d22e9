"""``python -m clinicflow``: the same as the ``clinicflow`` command."""

from clinicflow.cli import main

raise SystemExit(main())
