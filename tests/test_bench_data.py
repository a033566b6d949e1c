"""Benchmark readers -> TFDS array_record -> grain (auditdm_jax.data.bench).

Each test writes a few rows of one released format (tiny generated images)
into a tmp dir, builds it with `bench.build` and reads it back through grain.
"""

import base64
import csv
import io
import json
import os
import pickle
import sys

import numpy as np
from PIL import Image
import pytest

from auditdm_jax import tokenizer as tokenizer_lib
from auditdm_jax.data import bench
from auditdm_jax.data.bench import __main__ as bench_cli
from auditdm_jax.data.bench import formats
from auditdm_jax.data.bench import images as images_lib
from auditdm_jax.data.bench import schema
from auditdm_jax.eval import scorers


def _image(seed: int, size=(12, 10), mode="RGB", fmt="png") -> bytes:
  """A tiny image whose pixels encode `seed` (so images are told apart)."""
  rng = np.random.default_rng(seed)
  w, h = size
  chans = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
  arr = rng.integers(0, 255, (h, w, chans), dtype=np.uint8)
  im = Image.fromarray(arr[..., 0] if chans == 1 else arr, mode)
  buf = io.BytesIO()
  im.save(buf, format=fmt)
  return buf.getvalue()


def _b64(data: bytes) -> str:
  return base64.b64encode(data).decode()


def _write_tsv(path, rows, header=None):
  header = header or list(rows[0])
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f, delimiter="\t")
    w.writerow(header)
    for r in rows:
      w.writerow([r.get(h, "") for h in header])
  return str(path)


def _write_json(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)
  return str(path)


def _read(data_dir, benchmark, split, **kw):
  ds = bench.bench_source(data_dir, benchmark, split, **kw)
  return [ds[i] for i in range(len(ds))]


def _nothing_written(data_dir) -> bool:
  """No dataset, no staging folder, no empty real_bench/ left behind."""
  return not os.path.exists(data_dir) or os.listdir(data_dir) == []


# --- VLMEvalKit TSV -----------------------------------------------------------


def _mmbench_rows():
  rows = []
  for i in range(3):
    rows.append({"index": str(i), "question": f"What is shown {i}?",
                 "hint": "A hint." if i == 0 else "", "A": "cat", "B": "dog",
                 "C": "bird" if i != 1 else "", "D": "",
                 "answer": "ABA"[i], "category": f"cat{i % 2}",
                 "l2-category": "perception", "image": _b64(_image(i))})
  # Circular copy of question 0: options shifted, image stored once and
  # named by the original's index (VLMEvalKit saves space that way).
  rows.append(dict(rows[0], index="1000000", A="dog", B="bird", C="cat",
                   answer="C", image="0"))
  return rows


def test_vlmeval_tsv_mmbench_round_trip(tmp_path):
  path = _write_tsv(tmp_path / "MMBench_DEV_EN_V11.tsv", _mmbench_rows())
  src = bench.make_source("vlmeval_tsv", path=path)
  out = bench.build("mmbench_v11", "dev", src, tmp_path / "tfds")
  assert set(out) == {"dev"} and len(out["dev"]) == 4
  recs = _read(tmp_path / "tfds", "mmbench_v11", "dev")
  r0, r1, r3 = recs[0], recs[1], recs[3]
  assert r0["id"] == "0" and r0["benchmark"] == "mmbench_v11"
  assert r0["metric"] == "mmbench_circular"
  assert r0["question"] == "What is shown 0?" and r0["hint"] == "A hint."
  assert r0["options"] == ("cat", "dog", "bird")
  assert r0["answer_letter"] == "A" and r0["answers"] == ("cat",)
  assert r0["category"] == "cat0" and r0["l2_category"] == "perception"
  assert r0["bbox"] is None and r0["extra_images"] == ()
  assert r0["image"] == _image(0)  # PNG bytes kept exactly.
  assert r1["options"] == ("cat", "dog") and r1["answer_letter"] == "B"
  # The circular copy: same group, its own options, the referenced image.
  assert r3["id"] == "1000000" and r3["group"] == r0["group"] == "0"
  assert r3["options"] == ("dog", "bird", "cat") and r3["answers"] == ("cat",)
  assert r3["image"] == r0["image"]
  assert r1["group"] == "1"
  # Decoded images are uint8 RGB arrays.
  dec = _read(tmp_path / "tfds", "mmbench_v11", "dev", decode_images=True)
  assert dec[0]["image"].dtype == np.uint8
  assert dec[0]["image"].shape == (10, 12, 3)
  meta = bench.metadata(tmp_path / "tfds", "mmbench_v11", "dev")
  assert meta["metric"] == "mmbench_circular" and meta["split"] == "dev"
  assert meta["source"]["format"] == "vlmeval_tsv"
  assert meta["source"]["sizes"] == {path: os.path.getsize(path)}
  assert meta["skipped_rows"] == 0
  # Stored as array_record, read without TensorFlow.
  d = bench.dataset_dir(tmp_path / "tfds", "mmbench_v11", "dev")
  assert any(".array_record-" in f for f in os.listdir(d))
  assert "tensorflow" not in sys.modules
  # The scorers take the decoded records as they are.
  ex = bench.load_examples(tmp_path / "tfds", "mmbench_v11", "dev")
  assert isinstance(ex[0], bench.BenchExample) and ex[3].group == "0"
  res = scorers.score_benchmark("mmbench_v11", ["A", "B", "C", "C"], recs)
  assert res["circular_accuracy"] == pytest.approx(100 * 2 / 3)


def test_vlmeval_tsv_yes_no_refs_multi_image_and_skips(tmp_path):
  # MME: the second question of an image names the first row's index.
  mme = [{"index": "10", "question": "Is there a dog?", "answer": "Yes",
          "category": "existence", "image_path": "existence/1.png",
          "image": _b64(_image(1))},
         {"index": "11", "question": "Is there a cat?", "answer": "No",
          "category": "existence", "image_path": "existence/1.png",
          "image": "10"},
         {"index": "12", "question": "Is it red?", "answer": "No",
          "category": "color", "image_path": "", "image": _b64(_image(2))},
         {"index": "13", "question": "Is it blue?", "answer": "Yes",
          "category": "color", "image_path": "", "image": "12"},
         {"index": "14", "question": "No image", "answer": "Yes",
          "category": "color", "image_path": "", "image": ""}]
  p = _write_tsv(tmp_path / "MME.tsv", mme)
  bench.build("mme", "test", bench.make_source("vlmeval_tsv", path=p),
              tmp_path / "tfds")
  recs = _read(tmp_path / "tfds", "mme", "test")
  assert [r["id"] for r in recs] == ["10", "11", "12", "13"]  # 14 skipped.
  assert bench.metadata(tmp_path / "tfds", "mme", "test")["skipped_rows"] == 1
  assert recs[1]["image"] == recs[0]["image"] == _image(1)
  assert recs[0]["group"] == recs[1]["group"] == "existence/1.png"
  # Without image_path the image's content identifies the pair.
  assert recs[2]["group"] == recs[3]["group"] != recs[0]["group"]
  assert recs[2]["group"].startswith("img:")
  assert recs[0]["answers"] == ("Yes",) and recs[0]["options"] == ()

  # MMMU: a two-image question (list literal) and an open question.
  mmmu = [{"index": "1", "question": "<image 1> vs <image 2>?",
           "A": "left", "B": "right", "answer": "B", "category": "Art",
           "image": str([_b64(_image(3)), _b64(_image(4, fmt="jpeg"))])},
          {"index": "2", "question": "How many?", "A": "", "B": "",
           "answer": "42", "category": "Math", "image": _b64(_image(5))}]
  p = _write_tsv(tmp_path / "MMMU_DEV_VAL.tsv", mmmu)
  bench.build("mmmu", "validation", bench.make_source("vlmeval_tsv", path=p),
              tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "mmmu", "validation")
  assert r[0]["image"] == _image(3)
  assert r[0]["extra_images"] == (_image(4, fmt="jpeg"),)
  assert r[0]["answer_letter"] == "B" and r[0]["answers"] == ("right",)
  assert r[1]["options"] == () and r[1]["answers"] == ("42",)
  assert r[1]["answer_letter"] == ""

  # POPE: one question in several splits carries them comma-joined.
  pope = [{"index": "1", "question": "Is there a car?", "answer": "yes",
           "category": "adversarial,popular,random",
           "image": _b64(_image(6))},
          {"index": "2", "question": "Is there a cat?", "answer": "no",
           "category": "random", "image": _b64(_image(7))}]
  p = _write_tsv(tmp_path / "POPE.tsv", pope)
  bench.build("pope", "test", bench.make_source("vlmeval_tsv", path=p),
              tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "pope", "test")
  assert r[0]["category"] == "adversarial,popular,random"
  assert r[1]["answers"] == ("no",)


def test_non_png_jpeg_images_are_reencoded_as_png(tmp_path):
  gif, rgba = _image(8, fmt="gif"), _image(9, mode="RGBA")
  rows = [{"index": "1", "question": "q", "A": "x", "B": "y", "answer": "A",
           "image": _b64(gif)},
          {"index": "2", "question": "q", "A": "x", "B": "y", "answer": "B",
           "image": _b64(rgba)}]
  p = _write_tsv(tmp_path / "SEEDBench_IMG.tsv", rows)
  bench.build("seed_bench_img", "test",
              bench.make_source("vlmeval_tsv", path=p), tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "seed_bench_img", "test")
  assert r[0]["image"].startswith(schema.PNG_MAGIC)
  with Image.open(io.BytesIO(gif)) as g, Image.open(
      io.BytesIO(r[0]["image"])) as p0:
    np.testing.assert_array_equal(np.asarray(g.convert("RGB")),
                                  np.asarray(p0.convert("RGB")))
  assert r[1]["image"] == rgba  # PNG with alpha: kept as released.
  d = _read(tmp_path / "tfds", "seed_bench_img", "test", decode_images=True)
  assert d[1]["image"].shape == (10, 12, 3)


# --- parquet ------------------------------------------------------------------


def test_parquet_exports(tmp_path):
  # pyarrow comes with tensorflow-datasets.
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  struct = lambda b: {"bytes": b, "path": None}
  # lmms-lab/MMStar-like: A..D columns are absent, options in the question;
  # here lmms-lab/MMBench-like with A..D columns and an image struct.
  t = pa.table({
      "index": [5, 1000005],
      "question": ["Which?", "Which?"],
      "hint": [None, None],
      "A": ["red", "blue"], "B": ["blue", "red"], "C": [None, None],
      "D": [None, None],
      "answer": ["B", "A"],
      "category": ["colour", "colour"],
      "image": [struct(_image(20)), struct(_image(20))]})
  p1 = str(tmp_path / "mmbench.parquet")
  pq.write_table(t, p1)
  bench.build("mmbench_v11", "dev", bench.make_source("parquet", paths=[p1]),
              tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "mmbench_v11", "dev")
  assert [x["id"] for x in r] == ["5", "1000005"]
  assert r[0]["options"] == ("red", "blue") and r[0]["answer_letter"] == "B"
  assert r[1]["group"] == "5" and r[0]["image"] == _image(20)

  # lmms-lab/VQAv2-like: answers as a list of {answer, ...} structs, two
  # shards of one split.
  def vqa_shard(qids):
    return pa.table({
        "question_id": qids,
        "question": [f"q{q}" for q in qids],
        "answers": [[{"answer": "yes", "answer_confidence": "yes",
                      "answer_id": k} for k in range(1, 11)] for _ in qids],
        "multiple_choice_answer": ["yes" for _ in qids],
        "image": [struct(_image(q)) for q in qids]})
  p2, p3 = str(tmp_path / "vqa-0.parquet"), str(tmp_path / "vqa-1.parquet")
  pq.write_table(vqa_shard([1, 2]), p2)
  pq.write_table(vqa_shard([3]), p3)
  bench.build("vqav2", "val", bench.make_source("parquet", paths=[p2, p3]),
              tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "vqav2", "val")
  assert [x["id"] for x in r] == ["1", "2", "3"]
  assert r[2]["answers"] == ("yes",) * 10 and r[2]["image"] == _image(3)

  # lmms-lab/ai2d-like: an options list and a 0-based answer index; no id
  # column (ids become "<file stem>-<row>"); a renamed question column.
  t = pa.table({"query": ["Which part?"], "options": [["leaf", "root"]],
                "answer": ["1"], "image": [struct(_image(30))]})
  p4 = str(tmp_path / "ai2d.parquet")
  pq.write_table(t, p4)
  src = bench.make_source("parquet", paths=[p4],
                          columns={"question": "query"})
  bench.build("ai2d", "test", src, tmp_path / "tfds")
  (r,) = _read(tmp_path / "tfds", "ai2d", "test")
  assert r["id"] == "ai2d-1" and r["question"] == "Which part?"
  assert r["options"] == ("leaf", "root") and r["answer_letter"] == "B"

  # lmms-lab/MME-like: question_id is the image file, repeated for both
  # questions of an image; ignore it as an id, group by it.
  t = pa.table({"question_id": ["code/1.png", "code/1.png"],
                "question": ["Is it Python?", "Is it C?"],
                "answer": ["Yes", "No"],
                "category": ["code_reasoning", "code_reasoning"],
                "image": [struct(_image(32)), struct(_image(32))]})
  p6 = str(tmp_path / "mme.parquet")
  pq.write_table(t, p6)
  with pytest.raises(bench.BenchDataError, match="duplicate id 'code/1.png'"):
    bench.build("mme", "test", bench.make_source("parquet", paths=[p6]),
                tmp_path / "tfds")
  src = bench.make_source("parquet", paths=[p6],
                          columns={"id": "", "image_path": "question_id"})
  bench.build("mme", "test", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "mme", "test")
  assert [x["id"] for x in r] == ["mme-1", "mme-2"]
  assert r[0]["group"] == r[1]["group"] == "code/1.png"

  # Grounding from parquet: COCO xywh pixel box, normalised by the image.
  t = pa.table({"question_id": ["r1"], "question": ["left dog"],
                "answer": ["left dog"], "bbox": [[3.0, 2.0, 6.0, 5.0]],
                "image": [struct(_image(31, size=(12, 10)))]})
  p5 = str(tmp_path / "refcoco.parquet")
  pq.write_table(t, p5)
  bench.build("refcoco", "val", bench.make_source("parquet", paths=[p5]),
              tmp_path / "tfds")
  (r,) = _read(tmp_path / "tfds", "refcoco", "val")
  np.testing.assert_allclose(r["bbox"], (0.2, 0.25, 0.7, 0.75), rtol=1e-6)


# --- original JSON layouts ----------------------------------------------------


def _coco_dir(tmp_path, ids, pattern):
  d = tmp_path / "coco"
  d.mkdir(exist_ok=True)
  for i in ids:
    (d / pattern.format(i)).write_bytes(_image(i, fmt="jpeg"))
  return str(d)


def test_vqa_json_vqav2_and_okvqa(tmp_path):
  img_dir = _coco_dir(tmp_path, [42, 7], "COCO_val2014_{:012d}.jpg")
  qs = {"data_subtype": "val2014", "questions": [
      {"image_id": 42, "question": "How many dogs?", "question_id": 420},
      {"image_id": 42, "question": "Is it sunny?", "question_id": 421},
      {"image_id": 7, "question": "What colour?", "question_id": 70}]}
  ans = lambda a: [{"answer": x, "answer_confidence": "yes", "answer_id": k}
                   for k, x in enumerate(a, 1)]
  anns = {"annotations": [
      {"question_id": 420, "image_id": 42, "answer_type": "number",
       "question_type": "how many", "answers": ans(["2"] * 2 + ["3"] * 8)},
      {"question_id": 421, "image_id": 42, "answer_type": "yes/no",
       "question_type": "is it", "answers": ans(["yes"] * 10)},
      {"question_id": 70, "image_id": 7, "answer_type": "other",
       "question_type": "what color", "answers": ans(["red"] * 10)}]}
  src = bench.make_source(
      "vqa_json", questions=_write_json(tmp_path / "q.json", qs),
      annotations=_write_json(tmp_path / "a.json", anns), image_dir=img_dir)
  bench.build("vqav2", "val", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "vqav2", "val")
  assert [x["id"] for x in r] == ["420", "421", "70"]
  assert r[0]["answers"] == ("2", "2") + ("3",) * 8
  assert r[0]["category"] == "number" and r[0]["l2_category"] == "how many"
  assert r[0]["image"] == r[1]["image"] == _image(42, fmt="jpeg")
  assert r[0]["metric"] == "vqa_accuracy"
  res = scorers.score_benchmark("vqav2", ["two", "Yes.", "blue"], r)
  assert res["accuracy"] == pytest.approx(100 * (0.6 + 1 + 0) / 3)
  assert res["accuracy/yes/no"] == pytest.approx(100.0)

  # OK-VQA: same layout; COCO-2017 style file names are found too.
  img_dir2 = tmp_path / "coco2017"
  img_dir2.mkdir()
  (img_dir2 / f"{7:012d}.jpg").write_bytes(_image(7, fmt="jpeg"))
  qs2 = {"questions": [{"image_id": 7, "question": "What is it for?",
                        "question_id": 7001}]}
  anns2 = {"annotations": [{"question_id": 7001, "image_id": 7,
                            "answers": ans(["racing"] * 5 + ["race"] * 5)}]}
  src = bench.make_source(
      "vqa_json", questions=_write_json(tmp_path / "q2.json", qs2),
      annotations=_write_json(tmp_path / "a2.json", anns2),
      image_dir=str(img_dir2))
  bench.build("okvqa", "val", src, tmp_path / "tfds")
  (r,) = _read(tmp_path / "tfds", "okvqa", "val")
  assert r["answers"][5] == "race" and r["category"] == ""


def test_gqa_json(tmp_path):
  d = tmp_path / "images"
  d.mkdir()
  (d / "n1.jpg").write_bytes(_image(1, fmt="jpeg"))
  qs = {"q1": {"imageId": "n1", "question": "Is the cup left?",
               "answer": "yes", "fullAnswer": "Yes, it is.",
               "types": {"structural": "verify", "semantic": "rel"}},
        "q2": {"imageId": "n1", "question": "What is it?", "answer": "cup",
               "types": {"structural": "query", "semantic": "obj"}}}
  src = bench.make_source("gqa_json",
                          questions=_write_json(tmp_path / "g.json", qs),
                          image_dir=str(d))
  bench.build("gqa", "testdev", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "gqa", "testdev")
  assert [(x["id"], x["answers"], x["category"], x["l2_category"])
          for x in r] == [("q1", ("yes",), "verify", "rel"),
                          ("q2", ("cup",), "query", "obj")]
  assert r[0]["metric"] == "exact_match"


def test_coco_captions_json(tmp_path):
  img_dir = _coco_dir(tmp_path, [9, 3], "COCO_val2014_{:012d}.jpg")
  doc = {"images": [{"id": 9, "file_name": "COCO_val2014_000000000009.jpg"},
                    {"id": 3, "file_name": "COCO_val2014_000000000003.jpg"}],
         "annotations": [{"image_id": 9, "id": 1, "caption": "A dog."},
                         {"image_id": 3, "id": 2, "caption": "A cat."},
                         {"image_id": 9, "id": 3, "caption": "Two dogs."}]}
  src = bench.make_source("coco_captions",
                          annotations=_write_json(tmp_path / "c.json", doc),
                          image_dir=img_dir)
  bench.build("coco_captions", "val", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "coco_captions", "val")
  assert [(x["id"], x["answers"]) for x in r] == [
      ("3", ("A cat.",)), ("9", ("A dog.", "Two dogs."))]
  assert r[0]["question"] == "" and r[0]["metric"] == "cider"


def _refcoco_files(tmp_path, as_json=False):
  img_dir = _coco_dir(tmp_path, [581857], "COCO_train2014_{:012d}.jpg")
  refs = [{"ref_id": 1, "ann_id": 100, "image_id": 581857, "split": "testA",
           "category_id": 1, "sentences": [
               {"sent_id": 11, "sent": "man on left", "raw": "Man on left"},
               {"sent_id": 12, "sent": "left guy", "raw": "left guy"}]},
          {"ref_id": 2, "ann_id": 101, "image_id": 581857, "split": "val",
           "category_id": 1, "sentences": [
               {"sent_id": 21, "sent": "right man", "raw": "right man"}]}]
  inst = {"images": [{"id": 581857, "width": 12, "height": 10,
                      "file_name": "COCO_train2014_000000581857.jpg"}],
          "annotations": [{"id": 100, "image_id": 581857,
                           "bbox": [0.0, 1.0, 6.0, 4.0], "category_id": 1},
                          {"id": 101, "image_id": 581857,
                           "bbox": [6.0, 0.0, 6.0, 10.0], "category_id": 1}],
          "categories": [{"id": 1, "name": "person"}]}
  if as_json:
    refs_path = _write_json(tmp_path / "refs.json", refs)
  else:
    refs_path = str(tmp_path / "refs(unc).p")
    with open(refs_path, "wb") as f:
      pickle.dump(refs, f, protocol=2)
  return refs_path, _write_json(tmp_path / "instances.json", inst), img_dir


@pytest.mark.parametrize("as_json", [False, True])
def test_refcoco_refs_and_instances(tmp_path, as_json):
  refs, inst, img_dir = _refcoco_files(tmp_path, as_json)
  src = bench.make_source("refcoco", refs=refs, instances=inst,
                          image_dir=img_dir, split="testA")
  bench.build("refcoco", "testA", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "refcoco", "testA")
  assert [x["id"] for x in r] == ["1/11", "1/12"]  # Only split testA.
  assert r[0]["question"] == "man on left" and r[0]["category"] == "person"
  assert r[0]["group"] == "1"
  # xywh [0, 1, 6, 4] in a 12x10 image -> y0 .1, x0 0, y1 .5, x1 .5.
  np.testing.assert_allclose(r[0]["bbox"], (0.1, 0.0, 0.5, 0.5), rtol=1e-6)
  bins = [round(v * 1023) for v in (0.1, 0.0, 0.5, 0.5)]
  assert r[0]["answers"] == (tokenizer_lib.loc_tokens(*bins),)
  # The stored target string scores perfectly.
  res = scorers.score_benchmark("refcoco", [r[0]["answers"][0], "no box"], r)
  assert res["accuracy"] == 50.0 and res["invalid"] == 50.0


def test_refcoco_pickle_with_classes_is_refused(tmp_path):
  refs, inst, img_dir = _refcoco_files(tmp_path)

  class Evil:  # A pickle that would construct an object on load.
    def __reduce__(self):
      return (os.getcwd, ())

  with open(refs, "wb") as f:
    pickle.dump([Evil()], f, protocol=2)
  src = bench.make_source("refcoco", refs=refs, instances=inst,
                          image_dir=img_dir, split="val")
  with pytest.raises(bench.BenchDataError, match="refs pickle.*refusing"):
    list(src.examples("refcoco"))


def test_docvqa_and_chartqa_json(tmp_path):
  d = tmp_path / "docvqa"
  (d / "documents").mkdir(parents=True)
  (d / "documents" / "abc_1.png").write_bytes(_image(1))
  doc = {"dataset_name": "docvqa", "dataset_split": "val", "data": [
      {"questionId": 57, "question": "What is the date?",
       "image": "documents/abc_1.png", "docId": 5,
       "answers": ["1 May 1990", "May 1, 1990"],
       "question_types": ["layout"]}]}
  src = bench.make_source("docvqa_json",
                          path=_write_json(d / "val_v1.0.json", doc),
                          image_dir=str(d))
  bench.build("docvqa", "val", src, tmp_path / "tfds")
  (r,) = _read(tmp_path / "tfds", "docvqa", "val")
  assert r["id"] == "57" and r["answers"] == ("1 May 1990", "May 1, 1990")
  assert r["category"] == "layout" and r["metric"] == "anls"

  c = tmp_path / "chartqa"
  (c / "png").mkdir(parents=True)
  (c / "png" / "1.png").write_bytes(_image(2))
  (c / "png" / "2.png").write_bytes(_image(3))
  human = _write_json(c / "test_human.json", [
      {"imgname": "1.png", "query": "Max value?", "label": "45"}])
  aug = _write_json(c / "test_augmented.json", [
      {"imgname": "2.png", "query": "Which year?", "label": "2010"},
      {"imgname": "1.png", "query": "Colour?", "label": "Blue"}])
  src = bench.make_source("chartqa_json", paths=[human, aug],
                          image_dir=str(c / "png"))
  bench.build("chartqa", "test", src, tmp_path / "tfds")
  r = _read(tmp_path / "tfds", "chartqa", "test")
  assert [(x["id"], x["answers"], x["category"]) for x in r] == [
      ("test_human/0", ("45",), "test_human"),
      ("test_augmented/0", ("2010",), "test_augmented"),
      ("test_augmented/1", ("Blue",), "test_augmented")]


# --- bad input ----------------------------------------------------------------


def _failing_build(tmp_path, benchmark, src, match):
  data_dir = tmp_path / "tfds_bad"
  with pytest.raises(bench.BenchDataError, match=match):
    bench.build(benchmark, "dev", src, data_dir)
  assert _nothing_written(data_dir), os.listdir(data_dir)


def test_missing_column_is_named(tmp_path):
  rows = [{k: v for k, v in r.items() if k != "answer"}
          for r in _mmbench_rows()]
  path = _write_tsv(tmp_path / "noanswer.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"noanswer\.tsv: missing column.*answer")


def test_corrupt_base64_names_file_and_row_and_writes_nothing(tmp_path):
  rows = _mmbench_rows()
  rows[2]["image"] = "!!not base64!!" * 10
  path = _write_tsv(tmp_path / "bad.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"bad\.tsv, row 3 \(index 2\): invalid base64")
  # Valid base64 that is not an image.
  rows[2]["image"] = _b64(b"hello, I am not a picture" * 4)
  path = _write_tsv(tmp_path / "bad2.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"bad2\.tsv, row 3 \(index 2\): not a readable image")


def test_other_bad_rows(tmp_path):
  rows = _mmbench_rows()
  rows[3]["image"] = "77"  # Names no row.
  path = _write_tsv(tmp_path / "ref.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"ref\.tsv, row 4 \(index 1000000\): image cell '77'")
  rows = _mmbench_rows()
  rows[1]["answer"] = "D"  # Only A, B are options there.
  path = _write_tsv(tmp_path / "letter.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"letter\.tsv, row 2 .*answer 'D'")
  rows = _mmbench_rows()
  rows[1]["index"] = "0"
  path = _write_tsv(tmp_path / "dup.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"dup\.tsv: duplicate id '0'")
  with open(tmp_path / "ragged.tsv", "w") as f:
    f.write("index\tquestion\tanswer\timage\n1\tq\tA\n")
  _failing_build(tmp_path, "pope",
                 bench.make_source("vlmeval_tsv",
                                   path=str(tmp_path / "ragged.tsv")),
                 r"ragged\.tsv, row 1: 3 fields")
  rows = _mmbench_rows()
  rows[1]["index"] = ""
  path = _write_tsv(tmp_path / "noindex.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path),
                 r"noindex\.tsv, row 2 \(index \): empty index")
  rows = _mmbench_rows()
  rows[2]["image"] = ""
  path = _write_tsv(tmp_path / "noimage.tsv", rows)
  _failing_build(tmp_path, "mmbench_v11",
                 bench.make_source("vlmeval_tsv", path=path,
                                   skip_rows_without_image=False),
                 r"noimage\.tsv, row 3 \(index 2\): empty image cell")
  # MME rows must be yes / no.
  path = _write_tsv(tmp_path / "yn.tsv", [
      {"index": "1", "question": "q", "answer": "maybe", "category": "OCR",
       "image": _b64(_image(1))}])
  _failing_build(tmp_path, "mme", bench.make_source("vlmeval_tsv", path=path),
                 r"yn\.tsv, row 1 \(index 1\): mme answers are yes or no")


def test_json_layout_errors_name_the_question(tmp_path):
  img_dir = _coco_dir(tmp_path, [1], "COCO_val2014_{:012d}.jpg")
  qs = {"data_subtype": "val2014", "questions": [
      {"image_id": 1, "question": "q", "question_id": 10},
      {"image_id": 2, "question": "q", "question_id": 20}]}
  anns = {"annotations": [{"question_id": 10, "answers": [{"answer": "a"}]}]}
  qp = _write_json(tmp_path / "q.json", qs)
  ap = _write_json(tmp_path / "a.json", anns)
  src = bench.make_source("vqa_json", questions=qp, annotations=ap,
                          image_dir=img_dir)
  _failing_build(tmp_path, "vqav2", src,
                 r"q\.json, question 1 \(question_id 20\): no annotation")
  anns["annotations"].append({"question_id": 20, "answers": [{"answer": "b"}]})
  ap = _write_json(tmp_path / "a.json", anns)
  src = bench.make_source("vqa_json", questions=qp, annotations=ap,
                          image_dir=img_dir)
  _failing_build(tmp_path, "vqav2", src,
                 r"question_id 20\): image 2 not found; tried")
  (tmp_path / "broken.json").write_text("{not json")
  src = bench.make_source("gqa_json", questions=str(tmp_path / "broken.json"),
                          image_dir=img_dir)
  _failing_build(tmp_path, "gqa", src, r"broken\.json: not valid JSON")


def test_unknown_names_and_missing_files(tmp_path):
  path = _write_tsv(tmp_path / "m.tsv", _mmbench_rows())
  src = bench.make_source("vlmeval_tsv", path=path)
  with pytest.raises(ValueError, match="unknown benchmark 'mmbench_v9'"):
    bench.build("mmbench_v9", "dev", src, tmp_path / "tfds")
  with pytest.raises(ValueError, match="unknown format 'csv'"):
    bench.make_source("csv", path=path)
  with pytest.raises(FileNotFoundError, match="nope.tsv"):
    bench.make_source("vlmeval_tsv", path=str(tmp_path / "nope.tsv"))
  with pytest.raises(ValueError, match="split must be"):
    bench.build("mmbench_v11", "dev-en", src, tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="not prepared"):
    bench.bench_source(tmp_path / "tfds", "pope", "test")
  assert _nothing_written(tmp_path / "tfds")


def test_build_is_idempotent_and_guards_its_source(tmp_path):
  path = _write_tsv(tmp_path / "a.tsv", _mmbench_rows())
  src = bench.make_source("vlmeval_tsv", path=path)
  bench.build("mmbench_v11", "dev", src, tmp_path / "tfds")
  d = bench.dataset_dir(tmp_path / "tfds", "mmbench_v11", "dev")
  stamp = os.path.getmtime(os.path.join(d, "dataset_info.json"))
  bench.build("mmbench_v11", "dev", src, tmp_path / "tfds")  # Only opened.
  assert os.path.getmtime(os.path.join(d, "dataset_info.json")) == stamp
  other = bench.make_source(
      "vlmeval_tsv", path=_write_tsv(tmp_path / "b.tsv", _mmbench_rows()[:2]))
  with pytest.raises(ValueError, match="prepared from another source"):
    bench.build("mmbench_v11", "dev", other, tmp_path / "tfds")
  out = bench.build("mmbench_v11", "dev", other, tmp_path / "tfds",
                    overwrite=True)
  assert len(out["dev"]) == 2
  assert sorted(os.listdir(tmp_path / "tfds")) == ["real_bench"]


def test_example_validation():
  img = _image(0)
  ok = dict(id="1", benchmark="mmbench_v11", image=img, question="q",
            options=("a", "b"), answer_letter="B", answers=("b",), group="1")
  bench.BenchExample(**ok)
  bad = [({"answer_letter": "C"}, "answer_letter 'C'"),
         ({"image": b"GIF89a..."}, "PNG or JPEG"),
         ({"benchmark": "nope"}, "unknown benchmark"),
         ({"answers": "b"}, "not a str"),
         ({"group": ""}, "group is empty"),
         ({"id": ""}, "id must not be empty")]
  for change, msg in bad:
    with pytest.raises((ValueError, TypeError), match=msg):
      bench.BenchExample(**{**ok, **change})
  with pytest.raises(ValueError, match="normalised"):
    bench.BenchExample(id="1", benchmark="refcoco", image=img,
                       bbox=(0.5, 0.0, 0.2, 1.0), answers=("x",))
  assert schema.normalise_xywh([10, 20, 30, 40], 100, 200) == (
      0.1, 0.1, 0.3, 0.4)
  with pytest.raises(ValueError, match="invalid base64"):
    images_lib.from_base64("a$b")


def test_sixteen_benchmarks_each_with_a_registered_metric():
  assert len(bench.BENCHMARKS) == 16
  assert {s.paper_table for s in bench.BENCHMARKS.values()} == {
      "paligemma2", "gemma3"}
  assert sum(s.paper_table == "gemma3" for s in bench.BENCHMARKS.values()) == 8
  for spec in bench.BENCHMARKS.values():
    assert spec.metric in scorers.METRICS, spec
  assert set(formats.FORMATS) == {
      "vlmeval_tsv", "parquet", "vqa_json", "gqa_json", "coco_captions",
      "refcoco", "docvqa_json", "chartqa_json"}


def test_command_line(tmp_path, capsys):
  path = _write_tsv(tmp_path / "p.tsv", [
      {"index": "1", "question": "Is there a car?", "answer": "yes",
       "category": "random", "image": _b64(_image(1))}])
  argv = ["--data_dir", str(tmp_path / "tfds"), "--benchmark", "pope",
          "--split", "test", "--format", "vlmeval_tsv",
          "--source", json.dumps({"path": path})]
  assert bench_cli.main(argv) == 0
  assert "pope/test: 1 examples" in capsys.readouterr().out
  bad = argv[:-1] + [json.dumps({"path": str(tmp_path / "missing.tsv")})]
  assert bench_cli.main(bad) == 1
  assert "missing.tsv" in capsys.readouterr().err
