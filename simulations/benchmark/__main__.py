"""``python -m simulations.benchmark``."""

from simulations.benchmark.main import main

raise SystemExit(main())
