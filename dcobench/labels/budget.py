"""Label where it pays: `dcobench label RUN --budget N` draws N images in two passes.

A *point* is what a frontier plots and what the estimator corrects (`study/ppi.py`): method × knobs,
pooled over subjects; its strata (`sample.stratum_of`) are its subjects.

Pass 1 draws about half of N (N // 2, at least one image a point) evenly over the points and,
within a point, evenly over its subjects, so that subjects of equal size get equal inclusion
probabilities; a point or subject with too few images gives its share to the others. It is stored
as `RUN/labels/sample-s<seed>-b<N>-p1.json`.

Pass 2 (the same command again, once every pass-1 image has a subject answer) draws the rest,
N − n1, across points in proportion to N_h × S_h (Neyman): N_h the point's images, S_h the SD of
label − judge over its labelled pass-1 images, floored at √(p(1−p)) with p = 1/(n+2) so a point
where pass 1 saw no disagreement still gets a little; each point is capped by the images it has
left. Within a point it tops up the subjects evenly, and within a stratum it draws uniformly from
the images pass 1 did not take: given the counts, the union of both passes is a simple random
sample of the stratum, so every image of stratum s has inclusion probability π = (n1_s + n2_s)/N_s.

The pass-2 file (`...-p2.json`) holds every item of both passes (pass 1's first, in their order,
then pass 2's shuffled) with its final `pi`; `sample.stored_items` reads it after pass 1's, so the
final π is the one the estimator sees. Both files record the strata (`available`, drawn per pass)
and the cells they were drawn from; pass 2 draws only from those cells, so cells that finish in
between do not change N_s under pass 1's feet.
"""

from __future__ import annotations

import datetime as _dt
import heapq
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DcoError
from ..store import atomic_write_json, read_json
from .collect import point_of
from .sample import strata

DEFAULT_JUDGE = "oracle_subject"


def budget_path(run_dir: Path, budget: int, seed: int, step: int) -> Path:
    return Path(run_dir) / "labels" / f"sample-s{seed}-b{budget}-p{step}.json"


def point_key(item: dict) -> str:
    """The stratum key less its subject: `dco|sample.w_con=2.0`."""
    return item["stratum"][: -len(item["subject"]) - 1]


def spread(total: int, room: dict, rng, base: dict | None = None) -> dict:
    """`total` units over the keys of `room`, one at a time to the key with the fewest so far (`base`
    plus given), never more than its room; ties go by a random order drawn from `rng`."""
    keys = sorted(room)
    base = base or {}
    rank = dict(zip(keys, rng.permutation(len(keys)).tolist()))
    given = dict.fromkeys(keys, 0)
    heap = [(base.get(k, 0), rank[k], k) for k in keys if room[k] > 0]
    heapq.heapify(heap)
    for _ in range(total):
        if not heap:
            break
        count, r, k = heapq.heappop(heap)
        given[k] += 1
        if given[k] < room[k]:
            heapq.heappush(heap, (count + 1, r, k))
    return given


def neyman(total: int, weight: dict, room: dict) -> dict:
    """`total` units in proportion to `weight`, each key capped by its room (what a capped key cannot
    take goes to the others in proportion), rounded by largest remainder."""
    keys = sorted(k for k in room if room[k] > 0)
    share, free, left = dict.fromkeys(keys, 0.0), set(keys), float(min(total, sum(room[k] for k in keys)))
    while free and left > 1e-9:
        w = {k: weight[k] for k in free}
        wsum = sum(w.values())
        want = {k: left * (w[k] / wsum if wsum > 0 else 1 / len(free)) for k in free}
        full = [k for k in sorted(free) if want[k] >= room[k]]
        if not full:
            share.update(want)
            break
        for k in full:
            share[k] = float(room[k])
            left -= room[k]
            free.discard(k)
    out = {k: min(int(share[k] + 1e-9), room[k]) for k in keys}
    short = int(round(min(total, sum(room[k] for k in keys)))) - sum(out.values())
    for k in sorted(keys, key=lambda k: (-(share[k] - out[k]), k)):
        if short <= 0:
            break
        if out[k] < room[k]:
            out[k] += 1
            short -= 1
    return out


def _pools(run_dir: Path, cells=None) -> tuple[dict, dict]:
    """(stratum -> its images, point -> its strata), over `cells` only when given."""
    pools = strata(run_dir)
    if cells is not None:
        keep = set(cells)
        pools = {k: [it for it in v if it["cell"] in keep] for k, v in pools.items()}
        pools = {k: v for k, v in pools.items() if v}
    points: dict[str, list[str]] = {}
    for key, pool in pools.items():
        points.setdefault(point_key(pool[0]), []).append(key)
    return pools, points


def _sample(run_dir, budget, seed, step, items, pools, counts, points, extra=None) -> dict:
    cells = sorted({it["cell"] for pool in pools.values() for it in pool})
    return {"seed": seed, "budget": budget, "pass": step, "run": str(run_dir), "version": __version__,
            "drawn": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cells": cells,
            "strata": {k: {"available": len(pools[k]), **{f"pass{p}": c.get(k, 0) for p, c in counts.items()}}
                       for k in pools},
            "points": points, **(extra or {}), "items": items}


def pass_one(run_dir: Path, budget: int, seed: int) -> dict:
    run_dir = Path(run_dir)
    pools, points = _pools(run_dir)
    total = sum(len(p) for p in pools.values())
    if budget < len(points):
        raise DcoError(f"--budget {budget}: the run has {len(points)} points (method x knobs) and each needs a "
                       f"label; give --budget {len(points)} or more (several labels a point is better)")
    if budget > total:
        raise DcoError(f"--budget {budget}: the run's finished cells hold only {total} images; give --budget "
                       f"{total} or less")
    rng = np.random.default_rng(seed)
    first = max(len(points), budget // 2)
    per_point = spread(first, {p: sum(len(pools[k]) for k in ks) for p, ks in points.items()}, rng)
    counts, items = {}, []
    for p in sorted(points):
        counts.update(spread(per_point[p], {k: len(pools[k]) for k in points[p]}, rng))
    for key, pool in pools.items():
        picked = sorted(rng.choice(len(pool), size=counts[key], replace=False).tolist())
        items += [{**pool[i], "pi": counts[key] / len(pool), "pass": 1} for i in picked]
    items = [items[i] for i in rng.permutation(len(items))]
    summary = {p: {"available": sum(len(pools[k]) for k in ks), "pass1": per_point[p]} for p, ks in points.items()}
    return _sample(run_dir, budget, seed, 1, items, pools, {1: counts}, summary)


def pick_judge(frame, judge: str | None) -> str:
    """The judge whose disagreement drives pass 2: `judge`, else oracle_subject when it is scored,
    else the first binary subject judge (the kind the estimator corrects)."""
    from ..report.judges import judges_of
    from ..study.corrections import correctable

    scored = judges_of(frame)
    binary = sorted(j for j, m in scored.items() if m.get("kind") == "subject" and correctable(j))
    if judge is None:
        if not binary:
            raise DcoError("--judge: no binary subject judge (such as oracle_subject) is scored on the labelled "
                           "images, so pass 2 has no disagreement to follow; score the run's cells, then run this "
                           "command again")
        return DEFAULT_JUDGE if DEFAULT_JUDGE in binary else binary[0]
    if judge not in binary:
        why = "not scored on the labelled images" if judge not in scored else "not a binary subject judge"
        raise DcoError(f"--judge {judge}: {why}; give one of: {', '.join(binary) or 'none is scored'}")
    return judge


def disagreement(run_dir: Path, first: dict, judge: str | None) -> tuple[str, dict]:
    """(judge, point -> (yes/no labels, S_h)) over pass 1's labelled images."""
    from ..report.judges import labelled

    frame, _, _ = labelled([Path(run_dir)])
    ids = {it["item"]: point_key(it) for it in first["items"]}
    frame = frame[frame["item"].isin(set(ids))] if not frame.empty else frame
    judge = pick_judge(frame, judge)
    resid = (frame["human_subject"] - frame[judge]).dropna()
    by_point = resid.groupby(frame.loc[resid.index, "item"].map(ids))
    out = {}
    for p in first["points"]:
        r = by_point.get_group(p).to_numpy(float) if p in by_point.groups else np.zeros(0)
        floor = np.sqrt((q := 1 / (len(r) + 2)) * (1 - q))
        sd = float(np.std(r, ddof=1)) if len(r) >= 2 else 0.0
        out[p] = (len(r), max(sd, float(floor)))
    return judge, out


def pass_two(run_dir: Path, first: dict, judge: str | None) -> dict:
    run_dir = Path(run_dir)
    pools, points = _pools(run_dir, first["cells"])
    for key, rec in first["strata"].items():
        if len(pools.get(key, ())) != rec["available"]:
            raise DcoError(f"{run_dir}: stratum {key} had {rec['available']} images at pass 1 and has "
                           f"{len(pools.get(key, ()))} now; pass 2 cannot keep pass 1's probabilities; draw "
                           "anew with another --seed")
    judge, spread_of = disagreement(run_dir, first, judge)
    rng = np.random.default_rng([first["seed"], 2])
    taken = {k: {it["item"] for it in first["items"] if it["stratum"] == k} for k in pools}
    one = {k: len(taken[k]) for k in pools}
    size = {p: sum(len(pools[k]) for k in ks) for p, ks in points.items()}
    rest = first["budget"] - sum(one.values())
    per_point = neyman(rest, {p: size[p] * spread_of[p][1] for p in points},
                       {p: size[p] - sum(one[k] for k in points[p]) for p in points})
    two, new = {}, []
    for p in sorted(points):
        two.update(spread(per_point.get(p, 0), {k: len(pools[k]) - one[k] for k in points[p]}, rng,
                          base={k: one[k] for k in points[p]}))
    for key, pool in pools.items():
        left = [it for it in pool if it["item"] not in taken[key]]
        picked = sorted(rng.choice(len(left), size=two[key], replace=False).tolist())
        new += [{**left[i], "pass": 2} for i in picked]
    new = [new[i] for i in rng.permutation(len(new))]
    pi = {k: (one[k] + two[k]) / len(pools[k]) for k in pools}
    items = [{**it, "pi": pi[it["stratum"]]} for it in first["items"] + new]
    summary = {p: {"available": size[p], "pass1": sum(one[k] for k in points[p]), "pass2": per_point.get(p, 0),
                   "labelled": spread_of[p][0], "sd": spread_of[p][1]} for p in points}
    return _sample(run_dir, first["budget"], first["seed"], 2, items, pools, {1: one, 2: two}, summary,
                   {"judge": judge})


def unlabelled(run_dir: Path, sample: dict) -> int:
    """Items of `sample` that no labeller has answered the subject question of (unsure counts)."""
    from .store import read_labels

    labels = read_labels(run_dir)
    answered = set(labels.loc[labels["question"] == "subject", "item"])
    return sum(it["item"] not in answered for it in sample["items"])


def _point_name(key: str, sample: dict) -> str:
    it = next(it for it in sample["items"] if point_key(it) == key)
    return point_of(it["method"], it["knobs"])


def drawn_lines(sample: dict, where: Path) -> list[str]:
    """What was drawn, per point, as the command prints it."""
    pts, step = sample["points"], sample["pass"]
    if step == 1:
        head = (f"budget: pass 1 drew {len(sample['items'])} of the {sample['budget']} images, evenly over "
                f"{len(pts)} points ({where}); label them, then run this command again for pass 2")
        rows = [f"  {_point_name(p, sample)}: {r['pass1']} of {r['available']}" for p, r in sorted(pts.items())]
    else:
        head = (f"budget: pass 2 drew {sum(r['pass2'] for r in pts.values())} more images where {sample['judge']} "
                f"and the labels disagree most; {len(sample['items'])} in all ({where})")
        rows = [f"  {_point_name(p, sample)}: {r['pass1']} + {r['pass2']} = {r['pass1'] + r['pass2']} of "
                f"{r['available']} (SD of label - judge {r['sd']:.2f} on {r['labelled']} labels)"
                for p, r in sorted(pts.items())]
    return [head, *rows]


def load_or_draw_budget(run_dir: Path, budget: int, seed: int = 0, judge: str | None = None) \
        -> tuple[dict, Path, list[str]]:
    """(the newest pass, its file, lines to print): pass 2 when stored; else drawn now when pass 1 is
    labelled; else pass 1 (drawn now on the first visit), with a line saying what pass 2 waits for."""
    if budget < 1:
        raise DcoError(f"--budget {budget}: must be at least 1 (the number of images to label)")
    run_dir = Path(run_dir)
    p1, p2 = budget_path(run_dir, budget, seed, 1), budget_path(run_dir, budget, seed, 2)
    if p2.is_file():
        return read_json(p2), p2, []
    if not p1.is_file():
        first = pass_one(run_dir, budget, seed)
        atomic_write_json(p1, first)
        return first, p1, drawn_lines(first, p1)
    first = read_json(p1)
    waiting = unlabelled(run_dir, first)
    if waiting:
        return first, p1, [f"budget: pass 2 not drawn yet: {waiting} of {len(first['items'])} pass-1 images have "
                           f"no subject answer; label them, then run `dcobench label {run_dir} --budget {budget} "
                           f"--seed {seed}` again"]
    second = pass_two(run_dir, first, judge)
    atomic_write_json(p2, second)
    return second, p2, drawn_lines(second, p2)
