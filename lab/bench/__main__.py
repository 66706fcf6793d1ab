"""``python -m lab.bench``: the trainer benchmark (:mod:`lab.bench.train`)."""

from lab.bench.train import main

if __name__ == "__main__":
    main()
