"""Blind labels of a run's images by people, to check the automatic judges against them.

    RUN/labels/sample-s<seed>-n<per_stratum>.json   the drawn sample (`sample.py`): stored once, so
                                                    every visit sees the same items in the same order
    RUN/labels/<labeller>.csv                       one labeller's answers, append-only (`store.py`)

`dcobench label RUN` serves a page that shows each sampled image with its prompt and the subject's
references only (`server.py`, `page.html`); `--sheets` prints the same sample as contact sheets with
a CSV to fill in and `--import` reads it back (`sheets.py`); `--export` copies a labelled sample out
of its run folder (`export.py`).
"""
