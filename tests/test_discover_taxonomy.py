"""Failure taxonomy: TF-IDF, k-means++, silhouette, NMI / purity, naming,
rates from the rollout log, planted gaps, model diff, JSON.

Hand-computed values are derived in the comments. The last tests run the
taxonomy on the world harvest shared with test_discover_harvest.py.
"""

import importlib.util
import itertools
import json
import math

import numpy as np
import pytest

from auditdm_jax.discover import taxonomy as tax_lib

from test_discover_harvest import world_harvest  # Shared, memoised.

T = tax_lib


def _gaps_of_the_zoo():
  """configs/world/zoo.py's GAP_SPLITS ({conjunction: bench split})."""
  spec = importlib.util.spec_from_file_location("_zoo_cfg",
                                                "configs/world/zoo.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  assert set(mod.GAP_SPLITS) == set(mod.GAPS)
  return mod.GAP_SPLITS


# Three question templates x 4 objects x 4 colours = 48 failures.
OBJS = ("circle", "square", "triangle", "diamond")
COLS = ("red", "blue", "green", "purple")
TEMPLATES = (("how many {c} {o}s are there?", "count"),
             ("what colour is the {o}?", "colour"),
             ("is the {c} {o} on the left or on the right?", "left_right"))


def _failures():
  out = []
  for (o, c), (t, skill) in itertools.product(
      itertools.product(OBJS, COLS), TEMPLATES):
    out.append({"id": f"e{len(out)}", "question": t.format(o=o, c=c),
                "instruction": "", "skill": skill, "mode": "question",
                "auditor": "trained", "target_answer": "3",
                "consensus": "2", "truth": "", "tags": ()})
  return out


# --- Text features ------------------------------------------------------------


def test_tokens_ngrams_and_weighted_counts():
  assert T.tokenize("What colour is the Red circle?", ("is", "the")) == [
      "what", "colour", "red", "circle"]
  assert T.tokenize(None) == [] and T.tokenize("") == []
  assert T.tokenize("don't stop") == ["don't", "stop"]
  assert T.ngrams(["a", "b", "c"], 1, 2) == ["a", "b", "c", "a b", "b c"]
  cfg = T.TaxonomyConfig(stop_words=("the",), instruction_weight=0.5)
  got = T.term_counts("how many circles", "add the circles", cfg)
  # No bigram spans the two fields ("circles add").
  assert got == {"how": 1, "many": 1, "circles": 1.5, "how many": 1,
                 "many circles": 1, "add": 0.5, "add circles": 0.5}
  assert T.term_counts("x y", "z", T.TaxonomyConfig(
      instruction_weight=0)) == {"x": 1, "y": 1, "x y": 1}


def test_tfidf_hand_values():
  cfg = T.TaxonomyConfig(ngram_range=(1, 1), stop_words=())
  docs = [T.term_counts("red circle", None, cfg),
          T.term_counts("red square red", None, cfg)]
  vec = T.TfidfVectorizer.fit(docs, cfg)
  assert vec.vocab == ("circle", "red", "square")
  # N = 2: idf(red) = ln(3/3) + 1 = 1; idf(circle) = idf(square) =
  # ln(3/2) + 1.
  i2 = math.log(1.5) + 1
  np.testing.assert_allclose(vec.idf, [i2, 1, i2], rtol=1e-6)
  x = vec.transform(docs).dense()
  r0 = np.array([i2, 1, 0]) / math.hypot(i2, 1)
  r1 = np.array([0, 2, i2]) / math.hypot(2, i2)       # tf(red) = 2
  np.testing.assert_allclose(x, [r0, r1], rtol=1e-6)
  # Unknown terms are ignored; a doc without known terms is a zero row.
  np.testing.assert_array_equal(vec.transform([{"blue": 1}]).dense(),
                                [[0, 0, 0]])
  # min_df / max_df / max_features.
  assert T.TfidfVectorizer.fit(docs, T.TaxonomyConfig(
      ngram_range=(1, 1), stop_words=(), min_df=2)).vocab == ("red",)
  assert T.TfidfVectorizer.fit(docs, T.TaxonomyConfig(
      ngram_range=(1, 1), stop_words=(), max_df=0.5)).vocab == (
          "circle", "square")
  assert T.TfidfVectorizer.fit(docs, T.TaxonomyConfig(
      ngram_range=(1, 1), stop_words=(), max_features=1)).vocab == ("red",)
  sub = T.TfidfVectorizer.fit(docs, T.TaxonomyConfig(
      ngram_range=(1, 1), stop_words=(), sublinear_tf=True))
  r1 = np.array([0, math.log(3), i2 * math.log(2)])
  np.testing.assert_allclose(sub.transform(docs).dense()[1],
                             r1 / np.linalg.norm(r1), rtol=1e-6)


def test_sparse_rows_match_dense():
  rng = np.random.default_rng(0)
  dense = rng.random((7, 5)) * (rng.random((7, 5)) < 0.4)
  dense[3] = 0                                   # an empty row
  rows = T.Rows.from_dense(dense)
  np.testing.assert_allclose(rows.dense(), dense)
  c = rng.random((3, 5))
  np.testing.assert_allclose(rows.dot(c), dense @ c.T)
  np.testing.assert_allclose(rows.sq_norms(), (dense ** 2).sum(1))
  np.testing.assert_allclose(rows.take([5, 0, 3]).dense(), dense[[5, 0, 3]])
  labels = np.array([0, 1, 0, 2, 1, 0, 1])
  np.testing.assert_allclose(
      rows.group_means(labels, 4),
      [dense[labels == j].mean(0) if (labels == j).any() else np.zeros(5)
       for j in range(4)])
  assert T.Rows.from_dense(np.array([[1, 0], [1, 0], [0, 2.]])).distinct() == 2


# --- Clustering ---------------------------------------------------------------


def test_kmeans_recovers_blobs_deterministically():
  rng = np.random.default_rng(1)
  centres = np.array([[0, 0], [10, 0], [0, 10]], np.float64)
  truth = np.repeat([2, 0, 1], [5, 9, 7])        # sizes 5, 9, 7
  x = centres[truth] + 0.3 * rng.standard_normal((21, 2))
  labels, c, inertia = T.kmeans(x, 3, seed=0)
  # Canonical order: the largest cluster is 0.
  np.testing.assert_array_equal(labels, np.repeat([2, 0, 1], [5, 9, 7]))
  np.testing.assert_allclose(c[0], x[truth == 0].mean(0))
  again = T.kmeans(x, 3, seed=0)
  np.testing.assert_array_equal(again[0], labels)
  assert again[2] == inertia
  assert T.kmeans(x, 1)[2] > inertia
  with pytest.raises(ValueError, match="k must be"):
    T.kmeans(x, 22)
  # More clusters than distinct points: duplicates stay together.
  labels, c, _ = T.kmeans(np.array([[0.], [0.], [1.], [1.]]), 2, seed=3)
  assert labels[0] == labels[1] != labels[2] == labels[3]


def test_silhouette_hand_values():
  x = np.array([[0.], [1.], [10.], [11.]])
  # Point 0: a = 1, b = (10 + 11) / 2 = 10.5 -> 9.5 / 10.5; point 1: a = 1,
  # b = (9 + 10) / 2 -> 8.5 / 9.5; points 2, 3 mirror them.
  want = (9.5 / 10.5 + 8.5 / 9.5) / 2
  assert T.silhouette(x, np.array([0, 0, 1, 1])) == pytest.approx(want)
  # A point alone in its cluster scores 0: [0], [1, 10, 11].
  # Point 1: a = (9 + 10) / 2 = 9.5, b = 1 -> (1 - 9.5) / 9.5.
  # Point 10: a = (9 + 1) / 2 = 5, b = 10 -> 5 / 10; point 11: a = 5.5,
  # b = 11 -> 5.5 / 11.
  got = T.silhouette(x, np.array([0, 1, 1, 1]))
  assert got == pytest.approx((0 + (1 - 9.5) / 9.5 + 0.5 + 0.5) / 4)
  with pytest.raises(ValueError, match="clusters"):
    T.silhouette(x, np.zeros(4, int))


def test_nmi_and_purity_on_toy_labelings():
  a = [0, 0, 1, 1, 2, 2]
  b = ["x", "x", "x", "y", "y", "y"]
  # Contingency [[2, 0], [1, 1], [0, 2]], n = 6:
  # MI = 1/3 ln 2 + 1/6 ln 1 + 1/6 ln 1 + 1/3 ln 2 = 2/3 ln 2,
  # H(a) = ln 3, H(b) = ln 2 -> NMI = (2/3 ln 2) / ((ln 3 + ln 2) / 2).
  want = (2 / 3 * math.log(2)) / ((math.log(3) + math.log(2)) / 2)
  assert T.nmi(a, b) == pytest.approx(want)
  assert T.nmi(b, a) == pytest.approx(want)              # symmetric
  assert T.nmi([5, 5, 7, 7, 9, 9], b) == pytest.approx(want)  # relabelled
  # Purity: clusters' majorities 2 + 1 + 2 of 6.
  assert T.purity(a, b) == pytest.approx(5 / 6)
  # Not symmetric: clusters x = {0, 0, 1}, y = {1, 2, 2} -> (2 + 2) / 6.
  assert T.purity(b, a) == pytest.approx(4 / 6)
  assert T.nmi([0, 0, 1, 1], ["u", "u", "v", "v"]) == pytest.approx(1.0)
  assert T.purity([0, 0, 1, 1], ["u", "u", "v", "v"]) == 1.0
  # One cluster: no information (NMI 0), purity = the largest class.
  assert T.nmi([0] * 4, ["u", "u", "v", "w"]) == 0.0
  assert T.purity([0] * 4, ["u", "u", "v", "w"]) == 0.5
  assert T.nmi([1, 1], ["u", "u"]) == 1.0
  # Independent halves: MI = 0.
  assert T.nmi([0, 0, 1, 1], ["u", "v", "u", "v"]) == pytest.approx(0.0)
  with pytest.raises(ValueError, match="length"):
    T.nmi([0], ["u", "v"])
  with pytest.raises(ValueError, match="empty"):
    T.purity([], [])


# --- The taxonomy -------------------------------------------------------------


def test_three_templates_give_three_named_types():
  exs = _failures()
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=3))
  assert [t.count for t in tax.types] == [16, 16, 16]
  assert tax.oracle["nmi"] == pytest.approx(1.0)
  assert tax.oracle["purity"] == 1.0 and tax.oracle["labelled"] == 48
  by_skill = {next(iter(t.skills)): t for t in tax.types}
  assert by_skill["count"].name.startswith("how many")
  assert "what colour" in by_skill["colour"].name
  assert "left" in by_skill["left_right"].name
  # "how many" is named once, not as "how / many" too.
  assert by_skill["count"].name.count("many") == 1
  t = by_skill["colour"]
  # Its 4 distinct texts first, then the nearest repeat.
  assert len(set(t.example_ids)) == 5
  assert len({e["question"] for e in t.examples[:4]}) == 4
  assert all(tax.assignments[i] == t.id for i in t.example_ids)
  assert t.top_terms[0][1] >= t.top_terms[-1][1]
  assert tax.rates_known is False and t.rate is None
  # New texts go to the type of their template.
  assert tax.assign(["how many blue circles are there?",
                     "what colour is the square?"]) == [
                         by_skill["count"].id, by_skill["colour"].id]
  # Deterministic.
  again = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=3))
  assert again.to_json() == tax.to_json()


def test_k_by_silhouette():
  exs = _failures()
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k_min=2, k_max=5))
  sel = tax.k_selection
  assert sel["method"] == "silhouette"
  assert set(sel["scores"]) == {"2", "3", "4", "5"}
  best = max(sel["scores"], key=lambda k: sel["scores"][k])
  assert len(tax.types) == int(best)
  # Too few distinct texts for the range: one type per distinct text.
  few = [{"id": str(i), "question": q} for i, q in
         enumerate(["how many circles?", "how many circles?", "what colour?"])]
  tax = T.build_taxonomy(few, config=T.TaxonomyConfig(k_min=3, k_max=5))
  assert tax.k_selection["method"] == "trivial"
  assert [t.count for t in tax.types] == [2, 1]
  one = T.build_taxonomy(few[:1])
  assert len(one.types) == 1 and one.types[0].count == 1


def test_namer_names_types_and_falls_back():
  exs = _failures()
  asked = []

  def namer(prompt):
    asked.append(prompt)
    if "how many" in prompt:
      return '"Counting."\nbecause they count'
    if "colour" in prompt:
      return "x" * 100                             # too long: ignored
    return ""                                      # empty: ignored
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=3), namer=namer)
  assert len(asked) == 3
  assert "Reply with the name only" in asked[0]
  names = {next(iter(t.skills)): (t.name, t.name_source) for t in tax.types}
  assert names["count"] == ("Counting", "namer")
  assert names["colour"][1] == names["left_right"][1] == "terms"
  with pytest.raises(ValueError, match="namer"):
    T.build_taxonomy(exs, namer="not callable")


def test_rates_from_the_rollout_log():
  exs = _failures()
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=3))
  count_type = tax.assign(["how many red circles are there?"])[0]
  log = (
      # Harvest-style records: 3 counting pairs asked, 2 failed.
      [{"question": "how many red circles are there?", "error": None,
        "target_differs": True, "references_agree": True}] * 2 +
      [{"question": "how many red circles are there?", "error": None,
        "target_differs": False, "references_agree": True}] +
      # GRPO rollouts.jsonl style: a failure = consensus and reward > 0.
      [{"question": "what colour is the circle?", "error": None,
        "consensus": "red", "reward": 1.0},
       {"question": "what colour is the circle?", "error": None,
        "consensus": None, "reward": 0.0},
       # Invalid pairs are not asked.
       {"question": None, "error": "question: garbage", "reward": 0.0}])
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=3), asked=log)
  assert tax.rates_known and tax.asked == 5
  t = tax.by_id(count_type)
  assert (t.asked, t.failures, t.rate) == (3, 2, pytest.approx(2 / 3))
  colour = tax.by_id(tax.assign(["what colour is the circle?"])[0])
  assert (colour.asked, colour.failures, colour.rate) == (2, 1, 0.5)
  lr = [x for x in tax.types if x.id not in (t.id, colour.id)][0]
  assert (lr.asked, lr.failures, lr.rate) == (0, 0, None)


def test_agreed_examples_are_not_failures_and_bad_input():
  exs = _failures()
  extra = {"id": "ok", "question": "is there a cat?", "target_differs": False}
  tax = T.build_taxonomy(exs + [extra], config=T.TaxonomyConfig(k=3))
  assert "ok" not in tax.assignments and tax.num_failures == 48
  with pytest.raises(ValueError, match="duplicate"):
    T.build_taxonomy(exs + [exs[0]])
  with pytest.raises(ValueError, match="question"):
    T.build_taxonomy([{"id": "a"}])
  with pytest.raises(ValueError, match="k_min"):
    T.TaxonomyConfig(k_min=5, k_max=3)
  with pytest.raises(ValueError, match="ngram_range"):
    T.TaxonomyConfig(ngram_range=(2, 1))
  with pytest.raises(ValueError, match="max_df"):
    T.TaxonomyConfig(max_df=0)
  with pytest.raises(ValueError, match="stop_words"):
    T.TaxonomyConfig(stop_words="the")
  empty = T.build_taxonomy([], gaps=["skill:colour"])
  j = empty.to_json()
  assert j["types"] == [] and j["num_failures"] == 0
  assert j["gaps"] == {"planted": 1, "found": 0, "items": [
      {"conjunction": "skill:colour", "name": "skill:colour", "failures": 0,
       "verified": 0, "found": False, "types": {}}]}
  with pytest.raises(ValueError, match="no types"):
    empty.assign(["x?"])


def test_planted_gaps_found():
  gaps = _gaps_of_the_zoo()
  exs = [
      {"id": "a", "question": "what colour is the circle?", "truth": "purple",
       "target_answer": "red", "tags": ("skill:colour", "answer:purple")},
      {"id": "b", "question": "what colour is the square?", "truth": "purple",
       "target_answer": "purple",                 # references were wrong
       "tags": ("skill:colour", "answer:purple")},
      {"id": "c", "question": "how many squares are there?", "truth": "4",
       "target_answer": "5",
       "tags": ("skill:count_attr", "by:shape", "count<=4", "answer:4")},
      {"id": "d", "question": "how many red squares are there?",
       "truth": "6", "target_answer": "2",
       # Counting by colour AND shape is not the by:shape gap.
       "tags": ("skill:count_attr", "by:colour&shape", "count>=5",
                "answer:6")}]
  tax = T.build_taxonomy(exs, config=T.TaxonomyConfig(k=2), gaps=gaps)
  items = {g["name"]: g for g in tax.gaps["items"]}
  assert tax.gaps["planted"] == 3 and tax.gaps["found"] == 1
  assert (items["colour_purple"]["failures"],
          items["colour_purple"]["verified"]) == (2, 1)
  assert items["colour_purple"]["found"]
  assert items["count_shape_ge5"]["failures"] == 0
  assert not items["size"]["found"]
  assert sum(items["colour_purple"]["types"].values()) == 2


def test_json_schema():
  tax = T.build_taxonomy(_failures(), config=T.TaxonomyConfig(k=3),
                         asked=[{"question": "how many?", "error": None,
                                 "target_differs": True}])
  j = json.loads(json.dumps(tax.to_json()))
  assert j["format"] == "auditdm_jax.taxonomy/1"
  assert set(j) == {"format", "num_failures", "k", "k_selection", "config",
                    "vocab_size", "rates_known", "asked", "types",
                    "assignments", "oracle", "gaps"}
  assert set(j["types"][0]) == {
      "id", "name", "name_source", "top_terms", "count", "share", "asked",
      "failures", "rate", "example_ids", "examples", "skills", "modes",
      "auditors"}
  assert set(j["types"][0]["examples"][0]) == {
      "id", "question", "instruction", "mode", "kind", "auditor",
      "target_answer", "consensus", "truth", "skill"}
  assert sum(t["count"] for t in j["types"]) == j["num_failures"] == 48
  assert abs(sum(t["share"] for t in j["types"]) - 1) < 1e-9
  assert len(j["assignments"]) == 48 and j["gaps"] is None
  assert j["config"]["ngram_range"] == [1, 2]


# --- Model diff ---------------------------------------------------------------


def test_model_diff_hand_values():
  tax = T.build_taxonomy(_failures(), config=T.TaxonomyConfig(k=3))
  count_q, colour_q, lr_q = ("how many red circles are there?",
                             "what colour is the square?",
                             "is the red circle on the left or on the right?")
  pairs = ([{"question": count_q, "consensus": "2"}] * 4 +
           [{"question": colour_q, "consensus": "red"}] * 2 +
           [{"question": lr_q, "consensus": "left"}] * 2 +
           [{"question": count_q, "consensus": ""}])   # no label: skipped
  a = ["3", "3", "3", "2", "red", "red", "right", "left", "9"]
  b = ["2", "2", "2", "5", "red", "Red.", "right", "right", "9"]
  d = T.model_diff(tax, pairs, a, b, name_a="3B", name_b="28B")
  assert d["pairs"] == 8 and d["skipped"] == 1
  assert d["model_a"] == "3B" and d["model_b"] == "28B"
  # Each type holds one template's skill: key the rows by it.
  rows = {next(iter(tax.by_id(r["category"]).skills)): r
          for r in d["categories"]}
  # Counting: A fails 3/4, B 1/4 -> 75 / 25.
  c = rows["count"]
  assert (c["failures_a"], c["failures_b"], c["pairs"]) == (3, 1, 4)
  assert (c["norm_a"], c["norm_b"], c["diff"]) == (75.0, 25.0, 50.0)
  # Colour: neither fails ("Red." == "red") -> 50 / 50.
  assert (rows["colour"]["norm_a"], rows["colour"]["diff"]) == (50.0, 0.0)
  # Left/right: A 1/2, B 2/2 -> 100 * 0.5 / 1.5 = 33.3.
  assert rows["left_right"]["norm_a"] == pytest.approx(100 / 3)
  # Sorted from A's relative weakness to B's.
  assert [r["diff"] for r in d["categories"]] == sorted(
      [r["diff"] for r in d["categories"]], reverse=True)
  assert d["categories"][0]["category"] == c["category"]
  assert json.dumps(d)
  # By the oracle's skill, against the truth.
  pairs = [{"question": "q", "truth": "2", "skill": "count"},
           {"question": "q", "truth": "red", "skill": "colour"},
           {"question": "q", "truth": "", "skill": "colour"}]
  d = T.model_diff(None, pairs, ["3", "red", "x"], ["2", "blue", "x"],
                   label="truth", by="skill")
  assert [(r["category"], r["norm_a"]) for r in d["categories"]] == [
      ("count", 100.0), ("colour", 0.0)]
  with pytest.raises(ValueError, match="one answer per pair"):
    T.model_diff(tax, pairs, ["x"], ["y"])
  with pytest.raises(ValueError, match="taxonomy"):
    T.model_diff(None, pairs, ["3"] * 3, ["3"] * 3)
  with pytest.raises(ValueError, match="by"):
    T.model_diff(tax, pairs, ["3"] * 3, ["3"] * 3, by="colour")


class _Echo:
  name = "echo"

  def answer(self, questions, images):
    return [f"{q[:3]}{im.shape[0]}" for q, im in zip(questions, images)]


# --- On the world harvest -----------------------------------------------------


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
  return world_harvest(tmp_path_factory.mktemp("harvest"))


def test_taxonomy_of_the_world_harvest(harvested):
  from auditdm_jax.discover import harvest as harvest_lib  # pylint: disable=g-import-not-at-top
  examples = T.load_examples(harvested.out_dir)
  assert len(examples) == harvested.num_examples
  assert "image" not in examples[0]
  asked = harvest_lib.read_asked(harvested.out_dir)
  tax = T.build_taxonomy(examples, asked=asked, gaps=_gaps_of_the_zoo(),
                         config=T.TaxonomyConfig(k_max=6))
  j = json.loads(json.dumps(tax.to_json()))
  assert set(j["assignments"]) == {ex["id"] for ex in examples}
  assert j["rates_known"]
  assert j["asked"] == sum(r["error"] is None for r in asked)
  assert sum(t["asked"] for t in j["types"]) == j["asked"]
  assert sum(t["failures"] for t in j["types"]) == sum(
      r["target_differs"] for r in asked)
  for t in j["types"]:
    assert t["rate"] is None or 0 < t["rate"] <= 1
  assert 0 <= j["oracle"]["nmi"] <= 1 and j["oracle"]["labelled"] > 0
  # GAP_CAPTION's scene holds a purple circle and six squares.
  found = {g["name"] for g in j["gaps"]["items"] if g["found"]}
  assert {"colour_purple", "count_shape_ge5"} <= found
  # A model diff on the harvested pairs (answers from two fakes).
  ds = harvested.read(decode_images=False)
  pairs = [ds[i] for i in range(len(ds))]
  answers = T.ask(_Echo(), pairs)
  assert answers[0] == pairs[0]["question"][:3] + "64"
  d = T.model_diff(tax, pairs, [p["target_answer"] for p in pairs],
                   [p["consensus"] for p in pairs])
  assert all(r["norm_a"] == 100.0 for r in d["categories"])


def test_taxonomy_cli(harvested, tmp_path, capsys):
  out = tmp_path / "tax.json"
  rc = T.main(["--failures", str(harvested.out_dir), "--k", "3",
               "--gaps", json.dumps(_gaps_of_the_zoo()), "--out", str(out)])
  assert rc == 0
  j = json.loads(out.read_text())
  assert j["k"] == 3 and j["rates_known"] and j["gaps"]["found"] >= 2
  assert "planted gaps found" in capsys.readouterr().out
  assert T.main(["--failures", str(tmp_path / "none")]) == 2
  assert "no harvested failures" in capsys.readouterr().err
