"""`dcobench study`: a named set of runs into one folder, and one report that decides each claim.

    spec.py     the study file (data/studies/<name>.yaml): claims, each a set of arms (runs)
    run.py      plan every arm as `dcobench run` would, pool the cells (one copy per id), run them
    stats.py    the verdict rule: paired differences over units, a 95% t-interval, three outcomes
    claims.py   one report section per claim kind (frontier, merge, captions)
    figures.py  the merge claim's drop figure
    report.py   study.md, index.html, verdicts.csv and the claims' tables and figures
    readme.py   the findings blocks (docs/studies.md, the README's headline), generated from the report's CSVs
    cli.py      the command
"""
