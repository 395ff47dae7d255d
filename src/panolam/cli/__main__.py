"""``python -m panolam.cli`` (used by launchers such as ``torchrun -m``)."""

from panolam.cli import main

raise SystemExit(main())
