"""`python -m osmanthus.cli`: the `osmanthus` command without its console script."""

from osmanthus.cli.main import main

raise SystemExit(main())
