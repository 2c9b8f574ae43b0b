"""``python -m autellix.sim.cost_model``: print the tables of docs/cost-model.md (see ``--help``)."""

from autellix.sim.cost_model.report import main

if __name__ == "__main__":
    raise SystemExit(main())
