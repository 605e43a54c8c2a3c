"""`dcobench label`: the stratified blind sample, the append-only label store, contact sheets and their
import, the export, bad input, the HTTP routes, and the page itself driven by keys in headless Chromium."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dcobench.cli import main
from dcobench.errors import DcoError
from dcobench.labels import sample as smp
from dcobench.labels import store
from dcobench.labels.server import LabelServer, make_server, stable_port
from dcobench.labels.sheets import SHEET_COLUMNS, import_sheet

FAST = ["train.steps=2", "sample.steps=2", "sample.seeds=[0]", "score.enabled=false"]
HIDDEN = ("dco", "dreambooth", "w_con", "cfg_scale", "guidance", "stratum", "seed")  # never shown to a labeller


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_suite):
    """A tiny run: 2 methods x 2 knob values x the tiny subjects, 3 images a cell (a few seconds)."""
    out = tmp_path_factory.mktemp("labels") / "run"
    assert main(["run", "--suite", "tiny", "--methods", "dco,dreambooth", "--out", str(out), "--quiet", *FAST]) == 0
    return out


@pytest.fixture
def run(built, tmp_path):
    """A fresh copy per test, so labels written by one test are not seen by the next."""
    return Path(shutil.copytree(built, tmp_path / "run", ignore=shutil.ignore_patterns("loras")))


def _strata(run: Path) -> dict[str, int]:
    out = {}
    for path in sorted((run / "cells").glob("*/result.json")):
        key = smp.stratum_of(json.loads(path.read_text()))[2]
        out[key] = out.get(key, 0) + len(list((path.parent / "images").glob("*.png")))
    return out


def test_draw_takes_every_stratum_and_is_deterministic(run):
    strata = _strata(run)
    assert len(strata) == 8 and set(strata.values()) == {3}
    s = smp.draw(run, per_stratum=2, seed=0)
    counts = {}
    for it in s["items"]:
        counts[it["stratum"]] = counts.get(it["stratum"], 0) + 1
        assert set(it) == set(smp.FIELDS) and (run / it["image"]).is_file()
        assert it["item"] == smp.short_id(f"{it['cell']}/{it['image'].split('/', 2)[2]}")
        assert all(Path(r).is_file() for r in it["references"])
    assert counts == {k: 2 for k in strata}  # every stratum, per_stratum each
    assert s["seed"] == 0 and s["per_stratum"] == 2 and s["version"] and s["drawn"] and s["run"] == str(run)
    again = smp.draw(run, per_stratum=2, seed=0)
    assert [it["item"] for it in again["items"]] == [it["item"] for it in s["items"]]
    other = smp.draw(run, per_stratum=2, seed=1)
    assert [it["item"] for it in other["items"]] != [it["item"] for it in s["items"]]
    every = smp.draw(run, per_stratum=100, seed=0)["items"]  # fewer than asked: all, each once
    assert len(every) == sum(strata.values()) == len({it["item"] for it in every})
    order = [it["stratum"] for it in s["items"]]
    assert order != sorted(order)  # shuffled across strata


def test_blind_items_carry_nothing_that_names_the_method(run):
    for it in smp.draw(run, per_stratum=2)["items"]:
        seen = smp.blind(it)
        assert set(seen) == {"item", "image", "prompt", "references"}
        text = json.dumps(seen).lower()
        assert it["cell"] not in text and "images/p" not in text  # the cell and file names give it away
        assert not any(word in text for word in HIDDEN), text


def test_load_or_draw_stores_the_sample_and_reads_it_back(run, monkeypatch):
    first = smp.load_or_draw(run, 2, 0)
    path = run / "labels" / "sample-s0-n2.json"
    assert path.is_file() and json.loads(path.read_text()) == first
    monkeypatch.setattr(smp, "draw", lambda *a: pytest.fail("a stored sample is read back, not drawn again"))
    assert smp.load_or_draw(run, 2, 0) == first


def test_store_is_append_only_and_the_latest_answer_wins(run):
    items = smp.load_or_draw(run, 2, 0)["items"]
    row = store.record(run, "ann", items[0], "subject", "yes")
    assert row["answer"] == "yes" and row["labeller"] == "ann" and row["time"].endswith("+00:00")
    store.record(run, "ann", items[0], "subject", "n")  # a changed answer is a new row (keys y/n/u accepted)
    store.record(run, "ann", items[1], "prompt", "unsure")
    path = run / "labels" / "ann.csv"
    lines = path.read_text().splitlines()
    assert lines[0] == "item,cell,image,question,answer,time,labeller" and len(lines) == 4
    assert store.answers(run, "ann") == {(items[0]["item"], "subject"): "no", (items[1]["item"], "prompt"): "unsure"}
    before = path.read_bytes()
    for bad in [("subject", "maybe"), ("looks", "yes"), ("subject", "")]:
        with pytest.raises(DcoError):
            store.record(run, "ann", items[0], *bad)
    with pytest.raises(DcoError, match="letters, digits"):
        store.record(run, "../ann", items[0], "subject", "yes")
    assert path.read_bytes() == before
    (run / "labels" / "form.csv").write_text("sheet,number,item\n1,1,x\n")  # not a label file: left out
    store.record(run, "bob", items[0], "prompt", "yes")
    df = store.read_labels(run)
    assert list(df.columns) == store.COLUMNS and len(df) == 4 and set(df["labeller"]) == {"ann", "bob"}


def test_a_failed_write_keeps_the_file_and_threads_lose_no_row(run, monkeypatch):
    items = smp.load_or_draw(run, 2, 0)["items"]
    store.record(run, "ann", items[0], "subject", "yes")
    path = run / "labels" / "ann.csv"
    before = path.read_bytes()
    real = os.fdopen

    class Full:  # the disk fills half-way through the new file
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: Full(real(fd, *a, **kw)))
    with pytest.raises(DcoError, match="disk is full"):
        store.record(run, "ann", items[1], "subject", "no")
    monkeypatch.undo()
    assert path.read_bytes() == before and not list(path.parent.glob("*.tmp"))
    threads = [threading.Thread(target=lambda k=k: [store.record(run, "ann", items[k], "prompt", "yes")
                                                   for _ in range(5)]) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(store.read_rows(path)) == 1 + 4 * 5


def test_sheets_then_import_round_trip(run, tmp_path, capsys):
    sheets = tmp_path / "sheets"
    assert main(["label", str(run), "--per-stratum", "2", "--sheets", str(sheets)]) == 0
    sample = smp.load_or_draw(run, 2, 0)
    rows = list(csv.DictReader((sheets / "labels.csv").open()))
    assert list(rows[0]) == SHEET_COLUMNS and len(rows) == len(sample["items"])
    assert {r["item"] for r in rows} == {it["item"] for it in sample["items"]}
    assert [int(r["number"]) for r in rows] == list(range(1, len(rows) + 1))
    by_sheet = {}
    for r in rows:
        by_sheet.setdefault(r["sheet"], set()).add(r["subject"])
    assert all(len(s) == 1 for s in by_sheet.values())  # one subject a sheet
    assert sorted(p.stem for p in sheets.glob("sheet-*.png")) == sorted(by_sheet)
    assert "--import" in (sheets / "README.txt").read_text()
    from PIL import Image

    with Image.open(sheets / "sheet-01.png") as im:
        assert im.width >= 4 * 160 and im.height > 160
    fills = [("y", "n"), ("Yes", "unsure"), ("", ""), ("u", "")]
    for r, (a, b) in zip(rows, fills):
        r["subject_answer"], r["prompt_answer"] = a, b
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    assert main(["label", str(run), "--per-stratum", "2", "--import", str(filled), "--labeller", "cat"]) == 0
    assert "5 answers" in capsys.readouterr().out
    got = store.answers(run, "cat")
    ids = [r["item"] for r in rows]
    assert got == {(ids[0], "subject"): "yes", (ids[0], "prompt"): "no", (ids[1], "subject"): "yes",
                   (ids[1], "prompt"): "unsure", (ids[3], "subject"): "unsure"}
    cat = run / "labels" / "cat.csv"
    assert len(store.read_rows(cat)) == 5
    # the same file again adds nothing (the answers used to be doubled)
    assert main(["label", str(run), "--per-stratum", "2", "--import", str(filled), "--labeller", "cat"]) == 0
    assert "0 new" in (out := capsys.readouterr().out) and "5 already imported" in out, out
    assert len(store.read_rows(cat)) == 5
    # a file with more answers adds only those; one that changes an answer is refused, with nothing written
    rows[2]["subject_answer"] = "n"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    assert import_sheet(run, filled, "cat", sample) == (1, 5) and len(store.read_rows(cat)) == 6
    rows[0]["subject_answer"] = "no"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows + [dict(rows[3], prompt_answer="y")])  # a new answer too: not written either
    line = _error(["label", str(run), "--per-stratum", "2", "--import", str(filled), "--labeller", "cat"], capsys)
    assert f"{filled}: row 2: item '{ids[0]}': subject_answer 'no', but cat already answered 'yes'" in line
    assert "another --labeller" in line and len(store.read_rows(cat)) == 6
    rows[0]["subject_answer"] = "yes"
    with filled.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows + [dict(rows[1], subject_answer="no")])
    with pytest.raises(DcoError, match=rf"row {len(rows) + 2}: item '{ids[1]}' is answered twice .*'yes' in row 3"):
        import_sheet(run, filled, "cat", sample)
    got = store.answers(run, "cat")
    rows[2]["prompt_answer"] = "maybe"
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DcoError, match=r"bad.csv: row 4: prompt_answer: 'maybe' is not an answer"):
        import_sheet(run, bad, "cat", sample)
    rows[2]["prompt_answer"], rows[2]["item"] = "y", "000000000000"
    with bad.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    capsys.readouterr()
    assert main(["label", str(run), "--per-stratum", "2", "--import", str(bad), "--labeller", "cat"]) == 2
    err = capsys.readouterr().err
    assert "row 4: item '000000000000' is not in this run's sample" in err and len(err.strip().splitlines()) == 1
    assert store.answers(run, "cat") == got  # nothing of a refused file was written


def test_export_copies_bytes(run, tmp_path):
    sample = smp.load_or_draw(run, 2, 0)
    store.record(run, "ann", sample["items"][0], "subject", "yes")
    out = tmp_path / "export"
    assert main(["label", str(run), "--per-stratum", "2", "--export", str(out)]) == 0
    for it in sample["items"]:
        assert (out / "images" / f"{it['item']}.png").read_bytes() == (run / it["image"]).read_bytes()
        for ref in it["references"]:
            assert (out / "references" / it["subject"] / Path(ref).name).read_bytes() == Path(ref).read_bytes()
    rows = list(csv.DictReader((out / "items.csv").open()))
    assert [r["item"] for r in rows] == [it["item"] for it in sample["items"]] and "references" not in rows[0]
    assert json.loads(rows[0]["knobs"]) == sample["items"][0]["knobs"] and " " not in rows[0]["knobs"]
    assert (out / "labels-ann.csv").read_bytes() == (run / "labels" / "ann.csv").read_bytes()


def _error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_bad_input(run, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    (empty / "cells" / "unfinished").mkdir(parents=True)
    assert f"{empty}: no finished cells" in _error(["label", str(empty)], capsys)
    assert "run folder not found" in _error(["label", str(tmp_path / "nowhere")], capsys)
    assert "letters, digits" in _error(["label", str(run), "--labeller", "a b"], capsys)
    assert "at most one of" in _error(["label", str(run), "--sheets", "x", "--export", "y"], capsys)
    bare = Path(shutil.copytree(run, tmp_path / "bare"))
    for png in bare.glob("cells/*/images/*.png"):
        png.unlink()
    assert f"{bare}: its finished cells hold no images" in _error(["label", str(bare)], capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _error(["label", str(run), "--port", str(port), "--labeller", "ann"], capsys)
    assert f"port {port} is in use; pick another --port, or omit it: the run's usual port, else a free one" in line
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve().is_relative_to(run.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    line = _error(["label", str(run)], capsys)
    assert f"{run / 'labels'}: cannot write labels there (Read-only file system)" in line


def test_ctrl_c_ends_the_server_cleanly(run, monkeypatch, capsys):
    def interrupted(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(LabelServer, "serve_forever", interrupted)
    assert main(["label", str(run), "--labeller", "ann"]) == 0
    out = capsys.readouterr().out
    assert "label: http://127.0.0.1:" in out and "(Ctrl-C to stop)" in out
    assert f"labels are in {run / 'labels' / 'ann.csv'}" in out


def test_the_port_is_stable_per_run_and_a_moved_server_is_named(run, monkeypatch, capsys):
    monkeypatch.setattr(LabelServer, "serve_forever", lambda self, *a, **kw: None)
    usual = stable_port(run)
    assert 20000 <= usual < 30000 and stable_port(run / "." / "labels" / "..") == usual
    url = f"http://127.0.0.1:{usual}/"
    capsys.readouterr()
    for _ in range(2):  # a restart comes back at the same address, so an open page needs only a reload
        assert main(["label", str(run), "--labeller", "ann"]) == 0
        out = capsys.readouterr().out
        assert f"label: {url} (Ctrl-C to stop)" in out and "note:" not in out, out
    info = json.loads((run / "labels" / "server.json").read_text())
    assert info["url"] == url and info["port"] == info["usual_port"] == usual and info["labeller"] == "ann"
    with socket.socket() as taken:  # the usual port taken: a free one, said loudly, and the old one's successor
        taken.bind(("127.0.0.1", usual))
        taken.listen()
        assert main(["label", str(run), "--labeller", "ann"]) == 0
    out = capsys.readouterr().out
    moved = json.loads((run / "labels" / "server.json").read_text())["url"]
    assert moved != url and f"label: {moved} (Ctrl-C to stop)" in out
    assert f"note: port {usual}, this run's usual one, is taken; this server is at {moved} instead" in out
    assert f"note: the last server of this run was at {url}; open {moved} instead" in out
    assert f"the address is kept in {run / 'labels' / 'server.json'}" in out
    assert main(["label", str(run), "--labeller", "ann", "--port", "0"]) == 0  # 0: any free port, as before
    assert "usual one" not in capsys.readouterr().out


@pytest.fixture
def served(run):
    sample = smp.load_or_draw(run, 2, 0)
    server = make_server(run, sample, "ann")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield run, sample, server.url()
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body) -> tuple[int, dict]:
    req = urllib.request.Request(url + "api/answer", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_routes_serve_blind_items_and_only_images(served):
    run, sample, url = served
    status, body = _get(url + "api/items")
    data = json.loads(body)
    assert status == 200 and [it["item"] for it in data["items"]] == [it["item"] for it in sample["items"]]
    assert not any(word in body.decode().lower() for word in HIDDEN)
    first = sample["items"][0]
    assert _get(url + data["items"][0]["image"]) == (200, (run / first["image"]).read_bytes())
    assert _get(url + data["items"][0]["references"][0]) == (200, Path(first["references"][0]).read_bytes())
    assert _get(url + "img/" + first["image"])[0] == 200
    for bad in ["img/run.json", "img/../../../etc/passwd", "img/%2e%2e/%2e%2e/etc/hostname", "img/ref/nope.png"]:
        assert _get(url + bad)[0] == 404, bad
    assert _post(url, {"item": first["item"], "question": "subject", "answer": "yes"})[1]["answer"] == "yes"
    for body, word in [({"item": "nope", "question": "subject", "answer": "yes"}, "not in this sample"),
                       ({"item": first["item"], "question": "looks", "answer": "yes"}, "question 'looks'"),
                       ({"item": first["item"], "question": "prompt", "answer": "maybe"}, "answer 'maybe'"),
                       (["not", "an", "object"], "JSON object")]:
        status, reply = _post(url, body)
        assert status == 400 and word in reply["error"], reply
    status, body = _get(url + "api/items")
    assert json.loads(body)["items"][0]["answers"] == {"subject": "yes"}


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser(tmp_path, monkeypatch):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{', '.join(missing)} missing: .ci/run must install chromium chromium-driver")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def no_download(*a, **kw):
        raise AssertionError("selenium-manager must not run (it downloads browsers and drivers)")

    monkeypatch.setattr(SeleniumManager, "binary_paths", no_download)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _page_state(driver) -> dict:
    """What the page says it shows: the item, the question (stage) and the answers not yet saved."""
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body")
    return {k: body.get_attribute(f"data-{k}") for k in ("index", "stage", "pending", "item")}


def _settle(driver, ids, index, stage) -> None:
    """Wait until the page shows question `stage` of item `index` with nothing pending."""
    from selenium.webdriver.support.ui import WebDriverWait

    want = {"index": str(index), "stage": str(stage), "pending": "0", "item": ids[index]}
    WebDriverWait(driver, 10).until(lambda d: _page_state(d) == want)


def _press(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def test_label_by_keys_in_a_real_browser(served, tmp_path, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run, sample, url = served
    ids = [it["item"] for it in sample["items"]]
    start = time.monotonic()
    driver = _browser(tmp_path, monkeypatch)
    try:
        def wait_for(index, stage):
            _settle(driver, ids, index, stage)
            texts.append(driver.find_element(By.TAG_NAME, "body").text)

        def press(*keys):
            _press(driver, *keys)

        texts = []
        driver.get(url)
        wait_for(0, 0)
        assert f"0 / {len(ids)} labelled" in texts[-1] and "Is this the subject?" in texts[-1]
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        size = driver.execute_script("const i = document.getElementById('image'); return [i.naturalWidth, "
                                     "i.getBoundingClientRect().width, getComputedStyle(i).imageRendering]")
        assert size == [32, 384, "pixelated"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#refs img")) == len(sample["items"][0]["references"])
        press("y")
        wait_for(0, 1)
        assert "Does it follow the prompt" in texts[-1]
        press("n", "u", "y", "n", "n")  # three images: subject and prompt each
        wait_for(3, 0)
        assert f"3 / {len(ids)} labelled" in texts[-1]
        press(Keys.BACKSPACE)  # back one question: the third image's prompt
        wait_for(2, 1)
        press("y", "y")  # changes that answer, then the fourth image's subject
        wait_for(3, 1)
        driver.refresh()  # resumes at the first image not fully answered, at its open question
        wait_for(3, 1)
        assert f"3 / {len(ids)} labelled" in texts[-1]
        press(Keys.ARROW_LEFT)
        wait_for(3, 0)
        source = driver.page_source.lower()
    finally:
        driver.quit()
    rows = [(r["item"], r["question"], r["answer"], r["labeller"])
            for r in store.read_rows(run / "labels" / "ann.csv")]
    a = "ann"
    assert rows == [(ids[0], "subject", "yes", a), (ids[0], "prompt", "no", a), (ids[1], "subject", "unsure", a),
                    (ids[1], "prompt", "yes", a), (ids[2], "subject", "no", a), (ids[2], "prompt", "no", a),
                    (ids[2], "prompt", "yes", a), (ids[3], "subject", "yes", a)]
    assert store.answers(run, "ann")[(ids[2], "prompt")] == "yes"
    cells = {it["cell"].lower() for it in sample["items"]}
    for text in texts + [source]:
        low = text.lower().replace("dcobench", "")  # the tool's name (restart `dcobench label`), not the method's
        assert not any(word in low for word in HIDDEN) and not any(c in low for c in cells), text[:500]
    assert time.monotonic() - start < 30


def test_an_answer_the_server_did_not_save_stays_on_screen(run, tmp_path, monkeypatch):
    """The server stopped: the page used to say "not saved: Failed to fetch", move on and count the
    answer. Now it stays on the question, says what to do, and the answer is given again once a
    restarted server (at the run's usual port, so the same address) is back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sample = smp.load_or_draw(run, 2, 0)
    ids = [it["item"] for it in sample["items"]]
    path = run / "labels" / "ann.csv"

    def start():
        server = make_server(run, sample, "ann")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    server = start()
    url = server.url()
    driver = _browser(tmp_path, monkeypatch)
    try:
        def wait_for(index, stage):
            _settle(driver, ids, index, stage)
            return driver.find_element(By.ID, "error").text, driver.find_element(By.ID, "progress").text

        def press(*keys):
            _press(driver, *keys)

        driver.get(url)
        wait_for(0, 0)
        press("y", "n")
        assert wait_for(1, 0) == ("", f"1 / {len(ids)} labelled")
        before = path.read_bytes()
        server.shutdown()
        server.server_close()
        press("y")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "error").text)
        down = ("not saved: the server is not reachable; restart `dcobench label` and reload",
                f"1 / {len(ids)} labelled")
        assert wait_for(1, 0) == down  # the same question, not counted
        press("n", "u")  # given again, and a key after it: neither moves the page on
        time.sleep(0.5)
        assert wait_for(1, 0) == down and path.read_bytes() == before
        server = start()
        assert server.url() == url  # the run's usual port again: the open page reaches it
        press("u")
        assert wait_for(1, 1) == ("", f"1 / {len(ids)} labelled")

        def refuse(body):
            raise DcoError("RUN/labels/ann.csv: the disk is full; free some space")

        server.answer = refuse  # a non-2xx answer: the server's own line, and the page stays
        press("y")
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "error").text)
        assert wait_for(1, 1) == ("not saved: RUN/labels/ann.csv: the disk is full; free some space",
                                  f"1 / {len(ids)} labelled")
        del server.answer
        press("y")
        assert wait_for(2, 0) == ("", f"2 / {len(ids)} labelled")
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    rows = [(r["item"], r["question"], r["answer"]) for r in store.read_rows(path)]
    assert rows == [(ids[0], "subject", "yes"), (ids[0], "prompt", "no"), (ids[1], "subject", "unsure"),
                    (ids[1], "prompt", "yes")]
