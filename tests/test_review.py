"""Review (lipoclass review): sources, queues (BALD, margin, audit, confident learning), the
crash-safe decisions file, the token-protected HTTP API (Starlette TestClient), apply, and
bad input through the CLI. The real-browser test is tests/test_review_browser.py."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from lipoclass.cli import main
from lipoclass.errors import LipoclassError
from lipoclass.micrograph.predict import particle_columns
from lipoclass.quantify import REVIEW_COLUMNS

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with __import__("warnings").catch_warnings():  # Starlette 1.x: "install httpx2" notice
    __import__("warnings").simplefilter("ignore")
    from starlette.testclient import TestClient

from lipoclass.review import (
    NEGATIVE_COLUMNS,
    ReviewConfig,
    ReviewLog,
    ReviewSession,
    apply_reviews,
    bald,
    build_queues,
    create_app,
    label_issues,
    margin_uncertainty,
    open_source,
    read_decisions,
)
from lipoclass.review.queues import spread_by_group

CLASSES = ("unilamellar", "multilamellar", "uncertain")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def make_micrograph_folder(root: Path, n_mics: int = 2, per_mic: int = 4) -> Path:
    """A prediction folder as ``lipoclass predict MODEL MICROGRAPH... --out DIR`` writes it
    (particles.csv + summary.json), over small synthetic TIFF micrographs, without a model."""
    import tifffile

    rng = np.random.default_rng(0)
    (root / "mics").mkdir(parents=True)
    out = root / "pred"
    out.mkdir()
    header = particle_columns(CLASSES)
    lines, mics = [], []
    for m in range(n_mics):
        name = f"mic{m + 1:04d}"
        img = rng.normal(170, 8, (240, 240)).astype(np.float32)
        yy, xx = np.mgrid[:240, :240]
        for k in range(per_mic):
            cx, cy, r = 40 + 50 * k, 60 + 40 * (k % 3), 14
            ring = np.abs(np.hypot(xx - cx, yy - cy) - r) < 1.5
            img[ring] = 70
            p = rng.dirichlet((2, 2, 1))
            d = 2 * r + 3
            lines.append(
                [
                    name,
                    name,
                    str(k + 1),
                    cx,
                    cy,
                    cx - r - 2,
                    cy - r - 2,
                    cx + r + 2,
                    cy + r + 2,
                    int(math.pi * (d / 2) ** 2),
                    d,
                    "",
                    *(f"{v:.6f}" for v in p),
                    CLASSES[int(p.argmax())],
                    int(p.max() < 0.8),
                ]
            )
        path = root / "mics" / f"{name}.tif"
        tifffile.imwrite(path, np.clip(img, 0, 65535).astype(np.uint16))
        mics.append(
            {
                "name": name,
                "path": str(path),
                "sample": name,
                "particles": per_mic,
                "width": 240,
                "height": 240,
                "pixel_size_nm": None,
                "skipped": {},
            }
        )
    with (out / "particles.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(lines)
    summary = {"model": "m", "classes": list(CLASSES), "micrographs": mics}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic dataset (60 crops), a tiny 2-fold model on it, its predictions CSV."""
    root = tmp_path_factory.mktemp("review")
    ds, model, pred = root / "ds", root / "model", root / "pred.csv"
    assert main(["synth", "lamellarity", str(ds), "--n", "60", "--seed", "1"]) == 0
    assert (
        main(
            [
                "train",
                str(ds),
                "--model",
                "tiny",
                "--size",
                "24",
                "--epochs",
                "1",
                "--folds",
                "2",
                "--out",
                str(model),
            ]
        )
        == 0
    )
    assert main(["predict", str(model), str(ds), "--out", str(pred)]) == 0
    return {"root": root, "ds": ds, "model": model, "pred": pred}


@pytest.fixture
def mic_folder(tmp_path: Path) -> Path:
    return make_micrograph_folder(tmp_path)


def _client(session: ReviewSession) -> TestClient:
    return TestClient(create_app(session))


# --------------------------------------------------------------------------- queues


def test_bald_is_mutual_information() -> None:
    agree = np.array([[[0.7, 0.2, 0.1]], [[0.7, 0.2, 0.1]]])
    assert bald(agree)[0] == pytest.approx(0.0, abs=1e-9)
    opposed = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # confident members, opposite classes
    assert bald(opposed)[0] == pytest.approx(math.log(2), rel=1e-6)
    # the same mean prediction: disagreement raises BALD, the margin cannot tell them apart
    soft = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])
    assert bald(soft)[0] == pytest.approx(0.0, abs=1e-9)
    assert margin_uncertainty(opposed.mean(axis=0))[0] == margin_uncertainty(soft.mean(axis=0))[0]
    with pytest.raises(ValueError):
        bald(np.zeros((2, 3)))


def test_uncertain_queue_spreads_across_micrographs() -> None:
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.05])
    groups = ["a", "a", "a", "a", "b", "b"]
    # micrograph b gets its best particle second although four of a score higher
    assert spread_by_group(range(6), score, groups) == [0, 4, 1, 5, 2, 3]


def _confident_joint_offdiagonal(labels: np.ndarray, probs: np.ndarray) -> set[int]:
    """Northcutt et al. (JAIR 2021), eq. 1-2: per-class thresholds t_j = mean p_j over the
    examples labelled j; an example counts for class j* = argmax over the classes whose
    probability reaches their threshold; off the diagonal = label disagrees with j*."""
    c = probs.shape[1]
    t = np.array([probs[labels == j, j].mean() for j in range(c)])
    out = set()
    for i, (y, p) in enumerate(zip(labels, probs)):
        above = np.flatnonzero(p >= t)
        if len(above) == 0:
            continue
        j_star = above[np.argmax(p[above])]
        if j_star != y:
            out.add(i)
    return out


def test_label_issues_follow_confident_learning() -> None:
    rng = np.random.default_rng(0)
    n, c = 90, 3
    true = np.repeat(np.arange(c), n // c)
    probs = np.full((n, c), 0.05)
    probs[np.arange(n), true] = 0.9
    probs += rng.uniform(0, 0.02, probs.shape)
    probs /= probs.sum(axis=1, keepdims=True)
    given = true.copy()
    flipped = [3, 40, 77]
    for i in flipped:
        given[i] = (true[i] + 1) % c
    got = label_issues(given, probs)
    assert sorted(got.tolist()) == flipped
    assert set(got.tolist()) == _confident_joint_offdiagonal(given, probs)
    # unlabelled particles (-1) are never reported, and keep their positions out
    with_unlabelled = np.concatenate([[-1, -1], given])
    got2 = label_issues(with_unlabelled, np.concatenate([probs[:2], probs]))
    assert sorted(got2.tolist()) == [i + 2 for i in flipped]


def test_queues_of_each_source(trained: dict[str, Path], mic_folder: Path) -> None:
    with_model = open_source(trained["pred"], dataset=trained["ds"], model=trained["model"])
    assert with_model.members is not None and with_model.members.shape[:2] == (2, 60)
    q = build_queues(
        with_model.items,
        with_model.classes,
        with_model.probs,
        with_model.members,
        audit_size=10,
        seed=3,
    )
    assert q["uncertain"].score_name.startswith("BALD")
    assert len(q["audit"].order) == 10 and "label-issues" not in q
    plain = open_source(trained["pred"], dataset=trained["ds"])
    qp = build_queues(plain.items, plain.classes, plain.probs, None)
    assert qp["uncertain"].score_name == "1 - margin"
    train = open_source(trained["ds"], model=trained["model"])
    s = ReviewSession(train, trained["root"] / "r-train.csv", ReviewConfig(queue="label-issues"))
    assert s.default_queue == "label-issues" and "label-issues" in s.queues
    mic = open_source(mic_folder)
    assert mic.kind == "micrographs" and len(mic.items) == 8 and mic.items[0].id == "mic0001_1"
    qm = build_queues(mic.items, mic.classes, mic.probs, None, audit_size=4, seed=1)
    flagged = {i for i, it in enumerate(mic.items) if it.flagged}
    assert set(qm["uncertain"].order) == flagged
    again = build_queues(mic.items, mic.classes, mic.probs, None, audit_size=4, seed=1)
    assert again["audit"].order == qm["audit"].order  # seeded


def test_review_queue_cli(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "q.csv"
    rc = main(
        [
            "review",
            "queue",
            str(trained["ds"]),
            "--model",
            str(trained["model"]),
            "--queue",
            "audit",
            "--audit-size",
            "7",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 7 and [r["rank"] for r in rows] == [str(i) for i in range(1, 8)]


# --------------------------------------------------------------------------- HTTP API


def test_every_request_needs_the_token(mic_folder: Path) -> None:
    s = ReviewSession(open_source(mic_folder), mic_folder / "reviews.csv")
    c = _client(s)
    for path in ("/", "/api/state", "/crop/0.png", "/context/0.png", "/nothing"):
        assert c.get(path).status_code == 403, path
        assert c.get(path + "?token=wrong").status_code == 403, path
    assert (
        c.post("/api/decide", json={"queue": "audit", "i": 0, "label": "unsure"}).status_code == 403
    )
    assert (mic_folder / "reviews.csv").read_text().count("\n") == 1  # header only
    t = s.token
    page = c.get(f"/?token={t}")
    assert page.status_code == 200 and "lipoclass review" in page.text
    assert c.get("/api/state", headers={"X-Review-Token": t}).status_code == 200
    png = c.get(f"/crop/0.png?token={t}")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.get(f"/context/3.png?token={t}").content[:4] == b"\x89PNG"
    # only particles under review by position: no path reaches the file system
    for path in (
        "/crop/99.png",
        "/../summary.json",
        "/crop/..%2F..%2Fsummary.json",
        "/static/review.html",
        "/%2e%2e/particles.csv",
    ):
        assert c.get(f"{path}?token={t}").status_code == 404, path


def test_decisions_are_fsynced_before_saved(
    mic_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = ReviewSession(
        open_source(mic_folder), mic_folder / "reviews.csv", ReviewConfig(reviewer="ana")
    )
    c = _client(s)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    st = c.get(f"/api/state?queue=audit&token={s.token}").json()
    assert st["queue"] == "audit" and len(st["items"]) == 8
    first = st["items"][0]
    r = c.post(
        f"/api/decide?token={s.token}",
        json={"queue": "audit", "i": first["i"], "label": "multilamellar", "expect": ""},
    )
    assert r.status_code == 200 and r.json()["saved"] is True
    assert synced, "no fsync before the answer"
    rows = _rows(mic_folder / "reviews.csv")  # on disk while the server still runs
    assert tuple(rows[0]) == REVIEW_COLUMNS
    assert rows == [
        {
            "id": first["id"],
            "micrograph": first["micrograph"],
            "queue": "audit",
            "old_label": "",
            "new_label": "multilamellar",
            "reviewer": "ana",
            "time": rows[0]["time"],
        }
    ]
    bad = c.post(f"/api/decide?token={s.token}", json={"queue": "audit", "i": 0, "label": "x"})
    assert bad.status_code == 400 and "not a class" in bad.json()["error"]
    assert c.post(f"/api/decide?token={s.token}", content=b"{").status_code == 400
    assert len(_rows(mic_folder / "reviews.csv")) == 1


def test_restart_resumes_and_undo_retracts(mic_folder: Path) -> None:
    path = mic_folder / "reviews.csv"
    s = ReviewSession(open_source(mic_folder), path, ReviewConfig(queue="audit"))
    c = _client(s)
    items = c.get(f"/api/state?token={s.token}").json()["items"]
    for it, lab in zip(items[:3], ("unilamellar", "not_a_particle", "unsure")):
        c.post(f"/api/decide?token={s.token}", json={"queue": "audit", "i": it["i"], "label": lab})
    # undo of the third: a retraction row (empty new_label)
    c.post(
        f"/api/decide?token={s.token}",
        json={"queue": "audit", "i": items[2]["i"], "label": "", "expect": "unsure"},
    )
    s.log.close()
    s2 = ReviewSession(open_source(mic_folder), path, ReviewConfig(queue="audit"))
    st = _client(s2).get(f"/api/state?token={s2.token}").json()
    assert [it["decision"] for it in st["items"][:4]] == ["unilamellar", "not_a_particle", "", ""]
    assert [d.new_label for d in read_decisions(path)] == [
        "unilamellar",
        "not_a_particle",
        "unsure",
        "",
    ]


def test_two_tabs_lose_nothing_and_conflicts_are_logged(mic_folder: Path) -> None:
    s = ReviewSession(
        open_source(mic_folder), mic_folder / "reviews.csv", ReviewConfig(queue="audit")
    )
    tab1, tab2 = _client(s), _client(s)
    i = tab1.get(f"/api/state?token={s.token}").json()["items"][0]["i"]
    a = tab1.post(
        f"/api/decide?token={s.token}",
        json={"queue": "audit", "i": i, "label": "unilamellar", "expect": ""},
    ).json()
    assert "conflict" not in a
    # tab 2 still shows the particle undecided and decides otherwise: kept, and logged
    b = tab2.post(
        f"/api/decide?token={s.token}",
        json={"queue": "audit", "i": i, "label": "uncertain", "expect": ""},
    ).json()
    assert b["saved"] and b["conflict"]["label"] == "unilamellar"
    # tab 2 agreeing with what is there is no conflict
    c = tab2.post(
        f"/api/decide?token={s.token}",
        json={"queue": "audit", "i": i, "label": "uncertain", "expect": ""},
    ).json()
    assert "conflict" not in c
    assert [r["new_label"] for r in _rows(mic_folder / "reviews.csv")] == [
        "unilamellar",
        "uncertain",
        "uncertain",
    ]
    conflicts = _rows(mic_folder / "conflicts.csv")
    assert len(conflicts) == 1
    assert (conflicts[0]["earlier_label"], conflicts[0]["new_label"]) == (
        "unilamellar",
        "uncertain",
    )


# --------------------------------------------------------------------------- bad input


def _err(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lipoclass: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_one_line_before_the_server(
    trained: dict[str, Path], mic_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a prediction folder" in _err(["review", str(empty), "--no-browser"], capsys)
    assert "not found" in _err(["review", str(tmp_path / "nope"), "--no-browser"], capsys)
    assert "--dataset" in _err(["review", str(trained["pred"]), "--no-browser"], capsys)
    assert "--model" in _err(["review", str(trained["ds"]), "--no-browser"], capsys)
    # a predictions CSV naming a particle the dataset does not have
    bad_pred = tmp_path / "bad.csv"
    text = trained["pred"].read_text().splitlines()
    text[3] = "nosuchid" + text[3][text[3].index(",") :]
    bad_pred.write_text("\n".join(text) + "\n")
    err = _err(["review", str(bad_pred), "--dataset", str(trained["ds"]), "--no-browser"], capsys)
    assert "row 3" in err and "nosuchid" in err
    # a decisions file with an unknown particle id, or another header
    reviews = tmp_path / "reviews.csv"
    reviews.write_text(",".join(REVIEW_COLUMNS) + "\nghost,mic0001,audit,,unilamellar,a,t\n")
    err = _err(["review", str(mic_folder), "--reviews", str(reviews), "--no-browser"], capsys)
    assert "row 1" in err and "ghost" in err
    reviews.write_text("id,label\n")
    assert "header" in _err(["review", str(mic_folder), "--reviews", str(reviews)], capsys)
    # an unwritable place for the decisions (its folder is a file)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _err(
        ["review", str(mic_folder), "--reviews", str(blocker / "r.csv"), "--no-browser"], capsys
    )
    assert "cannot write" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        err = _err(
            ["review", str(mic_folder), "--reviews", str(ro / "r.csv"), "--no-browser"], capsys
        )
        assert "cannot write" in err
    # a moved micrograph
    (mic_folder.parent / "mics" / "mic0002.tif").rename(tmp_path / "moved.tif")
    assert "mic0002.tif not found" in _err(["review", str(mic_folder), "--no-browser"], capsys)
    with pytest.raises(ValueError):
        ReviewConfig(queue="everything")


# --------------------------------------------------------------------------- apply


def _write_reviews(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(REVIEW_COLUMNS)
        for pid, queue, old, new in rows:
            w.writerow([pid, "", queue, old, new, "ana", "2026-01-01T00:00:00Z"])


def test_apply_makes_a_new_dataset_version(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lipoclass.data import load_dataset

    ds = load_dataset(trained["ds"])
    p = {q.id: q for q in ds.particles}
    ids = list(p)
    reviews = tmp_path / "reviews.csv"
    _write_reviews(
        reviews,
        [
            (
                ids[0],
                "label-issues",
                p[ids[0]].label or "",
                "uncertain" if p[ids[0]].label != "uncertain" else "unilamellar",
            ),
            (ids[1], "audit", p[ids[1]].label or "", "not_a_particle"),
            (ids[2], "uncertain", p[ids[2]].label or "", "unsure"),
            (ids[3], "audit", p[ids[3]].label or "", "multilamellar"),
            (ids[3], "audit", p[ids[3]].label or "", ""),  # undone
        ],
    )
    out = tmp_path / "ds-v2"
    rc = main(["review", "apply", str(trained["ds"]), "--reviews", str(reviews), "--out", str(out)])
    assert rc == 0
    assert "1 relabelled" in capsys.readouterr().out
    new = load_dataset(out)
    q = {x.id: x for x in new.particles}
    assert len(new) == len(ds) - 1 and ids[1] not in q
    assert q[ids[0]].label != p[ids[0]].label
    assert q[ids[2]].label == p[ids[2]].label and q[ids[3]].label == p[ids[3]].label
    assert all(q[i].label == p[i].label for i in ids[4:])
    np.testing.assert_array_equal(
        np.asarray(__import__("PIL.Image").Image.open(q[ids[5]].image)),
        np.asarray(__import__("PIL.Image").Image.open(p[ids[5]].image)),
    )
    hist = _rows(out / "history.csv")
    assert [(h["id"], h["action"]) for h in hist] == [
        (ids[0], "relabelled"),
        (ids[1], "removed"),
        (ids[2], "kept (unsure)"),
    ]
    assert hist[0]["reviewer"] == "ana" and hist[0]["queue"] == "label-issues"
    meta = new.meta
    assert meta["version"] == 2 and meta["derived_from"] == str(trained["ds"].resolve())
    assert "review_file" in meta
    # a second round keeps the first round's history
    _write_reviews(reviews, [(ids[4], "audit", p[ids[4]].label or "", "not_a_particle")])
    out3 = tmp_path / "ds-v3"
    apply_reviews(out, reviews, out3)
    assert len(_rows(out3 / "history.csv")) == 4
    assert load_dataset(out3).meta["version"] == 3
    # bad input: unknown id, existing output
    _write_reviews(reviews, [("ghost", "audit", "", "unilamellar")])
    with pytest.raises(LipoclassError, match="ghost"):
        apply_reviews(trained["ds"], reviews, tmp_path / "x")
    with pytest.raises(LipoclassError, match="already exists"):
        apply_reviews(trained["ds"], reviews, out)


def test_apply_micrographs_gives_coords_and_detection_negatives(
    mic_folder: Path, tmp_path: Path
) -> None:
    reviews = mic_folder / "reviews.csv"
    log = ReviewLog(
        reviews, ids={f"mic000{m}_{k}" for m in (1, 2) for k in range(1, 5)}, labels=set(CLASSES)
    )
    log.decide("mic0001_2", "mic0001", "uncertain", "", "not_a_particle", "ana")
    log.decide("mic0002_1", "mic0002", "uncertain", "", "multilamellar", "ana")
    log.decide("mic0002_3", "mic0002", "audit", "", "unsure", "bo")
    log.close()
    out = tmp_path / "applied"
    assert main(["review", "apply", str(mic_folder), "--out", str(out)]) == 0
    neg = _rows(out / "detection_negatives.csv")
    assert tuple(neg[0]) == NEGATIVE_COLUMNS
    mic1 = str(mic_folder.parent / "mics" / "mic0001.tif")
    assert [(r["micrograph"], float(r["x"]), float(r["y"]), r["id"]) for r in neg] == [
        (mic1, 90.0, 100.0, "mic0001_2")
    ]
    assert float(neg[0]["diameter_px"]) == 31
    coords = _rows(out / "coords.csv")
    assert [(r["label"], float(r["x"])) for r in coords] == [("multilamellar", 40.0)]
    hist = _rows(out / "history.csv")
    assert {h["action"] for h in hist} == {"removed", "relabelled", "kept (unsure)"}
    assert json.loads((out / "provenance.json").read_text())["counts"]["removed"] == 1


def test_micrograph_loop_through_crop_keeps_the_place(mic_folder: Path, tmp_path: Path) -> None:
    """apply's coords.csv -> ``lipoclass crop --coords`` -> a labelled dataset whose crops.csv
    keeps each particle's micrograph: its review shows the micrograph around the particle and
    a not-a-particle decision becomes a detection negative at the particle's centre."""
    reviews = mic_folder / "reviews.csv"
    ids = {f"mic000{m}_{k}" for m in (1, 2) for k in range(1, 5)}
    log = ReviewLog(reviews, ids=ids, labels=set(CLASSES))
    for k, lab in zip(range(1, 5), ("unilamellar", "multilamellar", "unilamellar", "uncertain")):
        log.decide(f"mic0001_{k}", "mic0001", "audit", "", lab, "ana")
    log.close()
    applied = tmp_path / "applied"
    apply_reviews(mic_folder, reviews, applied)
    ds = tmp_path / "ds"
    mic1 = mic_folder.parent / "mics" / "mic0001.tif"
    rc = main(["crop", str(mic1), "--coords", str(applied / "coords.csv"), "--surround", "6",
               "--no-pixel-size", "--out", str(ds)])  # fmt: skip
    assert rc == 0
    from lipoclass.data import load_dataset

    crops = load_dataset(ds)
    assert sorted(p.label or "" for p in crops.particles) == sorted(
        ["unilamellar", "multilamellar", "unilamellar", "uncertain"]
    )
    from lipoclass.review.apply import _open_for_apply

    src2 = _open_for_apply(ds, None)  # the dataset's particles (a review needs a model too)
    assert all(g is not None for g in src2.geometry)  # crops.csv: the place on the micrograph
    from lipoclass.review.render import Renderer

    ctx = Renderer(src2).context(0)
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(ctx))
    assert img.mode == "RGB" and max(img.size) == 480  # a micrograph window, not the crop
    first = crops.particles[0].id
    again = tmp_path / "reviews2.csv"
    _write_reviews(again, [(first, "audit", crops.particles[0].label or "", "not_a_particle")])
    out = tmp_path / "ds-v2"
    apply_reviews(ds, again, out)
    neg = _rows(out / "detection_negatives.csv")
    assert [r["id"] for r in neg] == [first]
    g = src2.geometry[0]
    assert g is not None and (float(neg[0]["x"]), float(neg[0]["y"])) == (g.x, g.y)
    assert neg[0]["micrograph"] == str(mic1)
    assert float(neg[0]["diameter_px"]) == pytest.approx(31, abs=4)  # measured on the mask
    assert first not in {r["id"] for r in _rows(out / "crops.csv")}
