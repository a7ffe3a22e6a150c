"""`make bench`: measured figures for meshpos on this machine.

Each section is a module function `(args, results) -> dict` registered in `bench.__main__`; run a
subset with `python -m bench --only commit,merge`. Results also go to `bench/out/results.json`.
"""
