"""Tokenizer and prompt layouts against transformers' tokenizer and processors.

Everything is offline: the SentencePiece model is trained in the session
fixture `gemma_tokenizer_dir` (conftest.py), and the processors are built
from it plus explicit image-processor settings and the Gemma-3 chat template.
"""

import pickle

import numpy as np
import pytest
from PIL import Image

from auditdm_jax import prompts
from auditdm_jax import tokenizer as tok_lib

transformers = pytest.importorskip("transformers")

# The chat template google/gemma-3-*-it ships in tokenizer_config.json
# (the Jinja string literals hold real newlines, as after JSON decoding).
# pylint: disable=line-too-long
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n")
# pylint: enable=line-too-long

TEXTS = [
    "",
    "the cat",
    " the  cat ",
    "what is in this image?",
    "hi\nthere\n\n\nx",
    "describe the picture.\n",
    "<start_of_turn>user\nwhat is this?<end_of_turn>\n<start_of_turn>model\n",
    "detect cat ; dog",
    "<loc0000><loc0512><loc1023><loc0001> cat ; <seg000><seg127> dog",
    "<start_of_image><image_soft_token><end_of_image>\n\nhow many?",
    "日本 café ☃ 🙂 über naïve Ωmega",
    "12345 678.9 2024-01-02",
    "\t tab  and   spaces   ",
    "<bos>hi<eos>",
    "<pad>a<unk>b<mask>",
    "<loc99><loc10000> <seg1> <start_of_turn",
    "xyzzy QWERTY {}[]|~`^",
]
PALI_TPI = 4    # image tokens per image in the PaliGemma processor fixture
GEMMA3_TPI = 3  # soft tokens per image in the Gemma-3 processor fixture


@pytest.fixture(scope="module")
def tok(gemma_tokenizer_dir):
  return tok_lib.Tokenizer(gemma_tokenizer_dir / "tokenizer.model")


def _hf_tokenizer(d, **kw):
  return transformers.GemmaTokenizer.from_pretrained(str(d), **kw)


@pytest.fixture(scope="module")
def hf_tok(gemma_tokenizer_dir):
  return _hf_tokenizer(gemma_tokenizer_dir)


@pytest.fixture(scope="module")
def pali_processor(gemma_tokenizer_dir):
  image_processor = transformers.SiglipImageProcessor(
      size={"height": 16, "width": 16}, image_seq_length=PALI_TPI)
  return transformers.PaliGemmaProcessor(
      image_processor=image_processor,
      tokenizer=_hf_tokenizer(gemma_tokenizer_dir))


@pytest.fixture(scope="module")
def gemma3_processor(gemma_tokenizer_dir):
  hf = _hf_tokenizer(gemma_tokenizer_dir, extra_special_tokens={
      "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
      "image_token": "<image_soft_token>"})
  image_processor = transformers.Gemma3ImageProcessor(
      size={"height": 16, "width": 16})
  return transformers.Gemma3Processor(
      image_processor=image_processor, tokenizer=hf,
      chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=GEMMA3_TPI)


def _image(seed=0):
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(0, 256, (13, 19, 3), dtype=np.uint8))


# --- tokenizer ----------------------------------------------------------------


def test_ids_match_transformers(tok, hf_tok):
  for text in TEXTS:
    ours = tok.encode(text)
    theirs = hf_tok.encode(text, add_special_tokens=False)
    assert ours == theirs, f"{text!r}: ours {ours} vs transformers {theirs}"


def test_ids_match_transformers_on_corpus(tok, hf_tok, make_gemma_corpus):
  # Unseen sentences from the same distribution, and joined multi-line text.
  texts = make_gemma_corpus(n=200, seed=1)
  texts.append("\n".join(texts[:20]))
  for text in texts:
    theirs = hf_tok.encode(text, add_special_tokens=False)
    assert tok.encode(text) == theirs, text


def test_special_ids_by_piece(tok, hf_tok):
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (
      hf_tok.pad_token_id, hf_tok.eos_token_id, hf_tok.bos_token_id)
  for piece, got in [
      ("<start_of_turn>", tok.start_of_turn_id),
      ("<end_of_turn>", tok.end_of_turn_id),
      ("<start_of_image>", tok.start_of_image_id),
      ("<end_of_image>", tok.end_of_image_id),
      ("<image_soft_token>", tok.image_soft_token_id),
      ("<loc0000>", tok.loc_id(0)),
      ("<loc1023>", tok.loc_id(1023)),
      ("<seg000>", tok.seg_id(0)),
      ("<seg127>", tok.seg_id(127)),
  ]:
    assert got == hf_tok.convert_tokens_to_ids(piece), piece
    assert tok.id_to_piece(got) == piece
  assert tok.token_id("<mask>") == 4  # As in Gemma vocabularies.
  np.testing.assert_array_equal(
      tok.loc_ids, hf_tok.convert_tokens_to_ids(
          [f"<loc{i:04d}>" for i in range(1024)]))
  assert tok.seg_ids.shape == (128,) and tok.seg_ids.dtype == np.int32
  assert tok.stop_ids == (tok.eos_id, tok.end_of_turn_id)
  assert tok.maybe_token_id("<not_a_piece>") is None
  assert tok.maybe_token_id("<unk>") == 3
  assert tok.vocab_size == hf_tok.vocab_size


def test_missing_special_tokens(tmp_path, make_gemma_corpus):
  small = tok_lib.train_test_tokenizer(
      make_gemma_corpus(300), tmp_path / "small.model", vocab_size=400,
      num_loc=16, num_seg=0)
  assert small.loc_id(15) > 0
  with pytest.raises(tok_lib.MissingTokenError,
                     match=r"<loc0016>.*small\.model"):
    small.loc_id(16)
  with pytest.raises(tok_lib.MissingTokenError, match="<seg000>"):
    small.seg_id(0)
  with pytest.raises(ValueError, match=r"\[0, 1024\)"):
    small.loc_id(1024)


def test_encode_bos_eos_and_parse_special(tok):
  base = tok.encode("the cat")
  assert tok.encode("the cat", add_bos=True, add_eos=True) == [2] + base + [1]
  assert tok.encode("<eos>the cat") == [1] + base
  # Without parsing, control pieces are spelled out like raw SentencePiece.
  spelled = tok.encode("<eos>", parse_special=False)
  assert 1 not in spelled and len(spelled) > 1
  # User-defined pieces are atomic either way (SentencePiece parses them).
  assert tok.encode("<loc0005>", parse_special=False) == [tok.loc_id(5)]
  with pytest.raises(TypeError, match="str"):
    tok.encode(b"bytes")


def test_decode_rules(tok):
  text = "what is this? <loc0010> 日本"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  pad, eos, eot = tok.pad_id, tok.eos_id, tok.end_of_turn_id
  # Left padding and <bos> vanish; decoding stops at the first stop id.
  assert tok.decode([pad, pad, tok.bos_id] + ids + [eos] + ids) == text
  assert tok.decode(np.array(ids + [eot, 7, 8], np.int32)) == text
  assert tok.decode(ids + [pad, pad]) == text
  # stop_ids=() decodes past <eos> (control pieces render as "").
  assert tok.decode(ids + [eos] + ids, stop_ids=()) == text + text
  assert tok.decode(ids + [eot] + ids, stop_ids=[eos]) == (
      text + "<end_of_turn>" + text)
  assert tok.decode([]) == ""
  with pytest.raises(ValueError, match="outside the vocabulary"):
    tok.decode([tok.vocab_size + 5])
  with pytest.raises(ValueError, match="1-D"):
    tok.decode(np.zeros((2, 3), np.int32))


def test_loc_tokens():
  assert tok_lib.loc_tokens(10, 20, 500, 1023) == (
      "<loc0010><loc0020><loc0500><loc1023>")
  with pytest.raises(ValueError, match="loc bin"):
    tok_lib.loc_tokens(0, 0, 0, 1024)


def test_added_tokens_match_transformers(gemma_tokenizer_dir, pali_processor):
  # PaliGemmaProcessor appends "<image>" after the SentencePiece vocabulary;
  # registering it as an added token makes our encoding agree.
  hf = pali_processor.tokenizer
  image_id = pali_processor.image_token_id
  tok = tok_lib.Tokenizer(gemma_tokenizer_dir / "tokenizer.model",
                          added_tokens={"<image>": image_id})
  assert image_id == len(hf) - 1 and tok.vocab_size == image_id + 1
  for text in ["<image><image>what?", "a <image> b<eos>", "no image"]:
    assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text
  assert tok.decode([image_id] + tok.encode("hi")) == "<image>hi"
  with pytest.raises(ValueError, match="inside the SentencePiece vocabulary"):
    tok_lib.Tokenizer(gemma_tokenizer_dir / "tokenizer.model",
                      added_tokens={"<image>": 5})
  with pytest.raises(ValueError, match="already in"):
    tok_lib.Tokenizer(gemma_tokenizer_dir / "tokenizer.model",
                      added_tokens={"<bos>": 2000})


def test_bytes_dir_and_pickle(tok, gemma_tokenizer_dir):
  from_dir = tok_lib.Tokenizer(gemma_tokenizer_dir)  # hub-style directory
  assert from_dir.path == tok.path
  again = tok_lib.Tokenizer(tok.serialized_model)
  assert again.path is None
  assert again.encode(TEXTS[8]) == tok.encode(TEXTS[8])
  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode(TEXTS[10]) == tok.encode(TEXTS[10])
  assert clone.path == tok.path


def test_bad_model_files(tmp_path):
  missing = tmp_path / "nope" / "tokenizer.model"
  with pytest.raises(FileNotFoundError, match=r"nope/tokenizer\.model"):
    tok_lib.Tokenizer(missing)
  bad = tmp_path / "corrupt.model"
  bad.write_bytes(b"this is not a protobuf")
  with pytest.raises(ValueError, match=r"corrupt\.model"):
    tok_lib.Tokenizer(bad)
  with pytest.raises(ValueError, match="serialized model bytes"):
    tok_lib.Tokenizer(b"\x00\x01garbage")


def test_train_test_tokenizer_errors(tmp_path):
  with pytest.raises(ValueError, match="non-empty text"):
    tok_lib.train_test_tokenizer(["", ""], tmp_path / "t.model", 500)
  with pytest.raises(ValueError, match="vocab_size=100"):
    tok_lib.train_test_tokenizer(["hello world"] * 10, tmp_path / "t.model",
                                 100)


# --- prompt layouts: PaliGemma ------------------------------------------------

PALI_CASES = [
    ("what is this?", None),
    ("caption en", "a cat sitting on a mat."),
    ("detect cat", "<loc0010><loc0020><loc0500><loc0600> cat"),
    ("answer en how many cats are there?\n", "2"),
    ("describe 日本 café", "über naïve\nyes"),
    ("segment dog",
     "<loc0001><loc0002><loc0003><loc0004> <seg005><seg127> dog"),
]


@pytest.mark.parametrize("num_images", [1, 2])
def test_paligemma_matches_processor(tok, pali_processor, num_images):
  image_id = pali_processor.image_token_id
  images = [[_image(i) for i in range(num_images)]]
  for prefix, suffix in PALI_CASES:
    ours = prompts.build_prompt(
        "paligemma", tok, prefix, suffix, num_images=num_images,
        tokens_per_image=PALI_TPI, image_token_id=image_id)
    hf = pali_processor(images=images, text=[prefix],
                        suffix=None if suffix is None else [suffix],
                        return_tensors="np")
    case = f"{prefix!r} / {suffix!r}"
    np.testing.assert_array_equal(ours.tokens, hf["input_ids"][0], err_msg=case)
    # token_type_ids: 0 on the prefix (bidirectional), 1 on the suffix.
    np.testing.assert_array_equal(ours.mask_ar, hf["token_type_ids"][0],
                                  err_msg=case)
    np.testing.assert_array_equal(ours.loss_mask, hf["labels"][0] != -100,
                                  err_msg=case)
    np.testing.assert_array_equal(ours.image_mask,
                                  hf["input_ids"][0] == image_id, err_msg=case)
    assert ours.image_mask.sum() == num_images * PALI_TPI
    if suffix is not None:
      assert ours.tokens[-1] == tok.eos_id and ours.loss_mask[-1] == 1


def test_paligemma_without_images(tok):
  p = prompts.build_prompt("paligemma", tok, "caption en", "a dog")
  assert p.tokens[0] == tok.bos_id and not p.image_mask.any()
  n_prefix = 1 + len(tok.encode("caption en\n"))
  np.testing.assert_array_equal(p.mask_ar,
                                [0] * n_prefix + [1] * (len(p) - n_prefix))
  np.testing.assert_array_equal(p.loss_mask, p.mask_ar)


# --- prompt layouts: Gemma-3 chat ---------------------------------------------


def _gemma3_hf(processor, messages, images, add_generation_prompt):
  text = processor.apply_chat_template(
      messages, tokenize=False, add_generation_prompt=add_generation_prompt)
  kw = {"images": images} if images else {}
  return processor(text=text, return_tensors="np", **kw)


GEMMA3_CASES = [
    # (prefix text for our layout, chat content, num_images)
    ("what is in this image?", None, 1),
    ("  how many cats?  ", None, 2),
    ("compare <start_of_image> with <start_of_image> please", None, 2),
    ("<start_of_image>describe.\n", None, 1),
    ("hello there", None, 0),
    ("detect <loc0001> 日本 café", None, 1),
]


def _content(prefix, num_images):
  if "<start_of_image>" in prefix or not num_images:
    return prefix  # String content: the template trims it as a whole.
  return ([{"type": "image"}] * num_images
          + [{"type": "text", "text": prefix}])


@pytest.mark.parametrize("prefix,_,num_images", GEMMA3_CASES)
def test_gemma3_prompt_matches_processor(tok, gemma3_processor, prefix, _,
                                         num_images):
  ours = prompts.build_prompt("gemma3_chat", tok, prefix, num_images=num_images,
                              tokens_per_image=GEMMA3_TPI)
  messages = [{"role": "user", "content": _content(prefix, num_images)}]
  images = [[_image(i) for i in range(num_images)]] if num_images else None
  hf = _gemma3_hf(gemma3_processor, messages, images,
                  add_generation_prompt=True)
  ids = hf["input_ids"][0]
  np.testing.assert_array_equal(ours.tokens, ids)
  # token_type_ids == 1 exactly on the soft tokens.
  np.testing.assert_array_equal(ours.image_mask, hf["token_type_ids"][0] == 1)
  assert not ours.loss_mask.any()
  # mask_ar: 1 everywhere except the 2nd.. soft tokens of each image.
  expected_ar = np.ones(len(ids), np.int32)
  soft = np.flatnonzero(ours.image_mask)
  first_of_image = soft[np.r_[True, np.diff(soft) > 1]] if soft.size else soft
  expected_ar[np.setdiff1d(soft, first_of_image)] = 0
  np.testing.assert_array_equal(ours.mask_ar, expected_ar)
  assert len(first_of_image) == num_images


@pytest.mark.parametrize("answer",
                         ["a cat.", " two cats ", "<loc0001> yes\nno"])
def test_gemma3_answer_matches_chat_template(tok, gemma3_processor, answer):
  prefix = "what is this?"
  ours = prompts.build_prompt("gemma3_chat", tok, prefix, answer, num_images=1,
                              tokens_per_image=GEMMA3_TPI)
  messages = [
      {"role": "user", "content": _content(prefix, 1)},
      {"role": "assistant", "content": [{"type": "text", "text": answer}]},
  ]
  hf = _gemma3_hf(gemma3_processor, messages, [[_image()]],
                  add_generation_prompt=False)["input_ids"][0]
  # The template ends the model turn with "<end_of_turn>\n"; we stop at
  # <end_of_turn>, which is what generation stops on.
  assert hf[-1] == tok.encode("\n")[0]
  np.testing.assert_array_equal(ours.tokens, hf[:-1])
  answer_ids = tok.encode(answer.strip()) + [tok.end_of_turn_id]
  n = len(answer_ids)
  np.testing.assert_array_equal(ours.tokens[-n:], answer_ids)
  np.testing.assert_array_equal(ours.loss_mask, [0] * (len(ours) - n) + [1] * n)
  # The prompt part equals the sampling prompt.
  prompt = prompts.build_prompt("gemma3_chat", tok, prefix, num_images=1,
                                tokens_per_image=GEMMA3_TPI)
  np.testing.assert_array_equal(ours.tokens[:len(prompt)], prompt.tokens)


def test_gemma3_custom_image_token_id(tok):
  p = prompts.build_prompt("gemma3_chat", tok, "hi", num_images=1,
                           tokens_per_image=5, image_token_id=511)
  assert (p.tokens[p.image_mask] == 511).all() and p.image_mask.sum() == 5


def _attention(mask_ar):
  """bool[T, T]: q (row) sees k (column) iff cumsum(ar)[k] <= cumsum(ar)[q]."""
  g = np.cumsum(mask_ar)
  return g[None, :] <= g[:, None]


def test_mask_ar_attention_semantics(tok):
  p = prompts.build_prompt("gemma3_chat", tok, "a <start_of_image> b", "c",
                           num_images=1, tokens_per_image=3)
  att = _attention(p.mask_ar)
  soft = np.flatnonzero(p.image_mask)
  # The image block is fully bidirectional; text before it cannot see it.
  assert att[np.ix_(soft, soft)].all()
  assert not att[:soft[0], soft].any()
  # Text is causal.
  text = np.flatnonzero(~p.image_mask)
  np.testing.assert_array_equal(att[np.ix_(text, text)],
                                np.tril(np.ones((len(text),) * 2, bool)))
  # PaliGemma: the prefix is one bidirectional block, the suffix causal.
  q = prompts.build_prompt("paligemma", tok, "x", "y z", num_images=1,
                           tokens_per_image=2, image_token_id=tok.vocab_size)
  att = _attention(q.mask_ar)
  n_prefix = int((q.mask_ar == 0).sum())
  assert att[:n_prefix, :n_prefix].all()
  assert not att[:n_prefix, n_prefix:].any()
  assert att[n_prefix:, :n_prefix].all()


def test_layout_errors(tok):
  with pytest.raises(ValueError, match="unknown prompt layout 'llava'"):
    prompts.get_layout("llava")
  with pytest.raises(ValueError,
                     match="2 <start_of_image> markers for 1 images"):
    prompts.build_prompt("gemma3_chat", tok, "<start_of_image><start_of_image>",
                         num_images=1, tokens_per_image=2)
  with pytest.raises(ValueError, match="image_token_id"):
    prompts.build_prompt("paligemma", tok, "x", num_images=1,
                         tokens_per_image=4)
  with pytest.raises(ValueError, match="tokens_per_image"):
    prompts.build_prompt("paligemma", tok, "x", num_images=1, image_token_id=9)
  with pytest.raises(ValueError, match="placeholder"):
    prompts.build_prompt("gemma3_chat", tok, "sneaky <image_soft_token>",
                         num_images=1, tokens_per_image=2)
  with pytest.raises(ValueError, match="placeholder"):
    prompts.build_prompt("gemma3_chat", tok, "text only <image_soft_token>")
  with pytest.raises(ValueError, match="already registered"):
    prompts.register_layout("paligemma")(prompts.paligemma_layout)
  assert {"paligemma", "gemma3_chat"} <= set(prompts.layout_names())
  with pytest.raises(ValueError, match="differ in length"):
    prompts.PromptTokens(tokens=[1, 2], mask_ar=[0], loss_mask=[0, 0],
                         image_mask=[False, False])
  with pytest.raises(ValueError, match="only 0 and 1"):
    prompts.PromptTokens(tokens=[1], mask_ar=[2], loss_mask=[0],
                         image_mask=[False])


def test_pad_batch(tok):
  a = prompts.build_prompt("paligemma", tok, "caption", "a long answer here",
                           num_images=1, tokens_per_image=2,
                           image_token_id=tok.vocab_size)
  b = prompts.build_prompt("paligemma", tok, "hi", num_images=1,
                           tokens_per_image=2, image_token_id=tok.vocab_size)
  length = len(a) + 2
  left = prompts.pad_batch([a, b], length)
  assert left.tokens.shape == (2, length) and left.tokens.dtype == np.int32
  assert left.input_mask.dtype == np.bool_ and left.image_mask.dtype == np.bool_
  np.testing.assert_array_equal(left.tokens[1, -len(b):], b.tokens)
  np.testing.assert_array_equal(left.tokens[1, :-len(b)], tok.pad_id)
  np.testing.assert_array_equal(left.input_mask[1], [False] * (length - len(b))
                                + [True] * len(b))
  np.testing.assert_array_equal(left.loss_mask[0, -len(a):], a.loss_mask)
  right = prompts.pad_batch([a, b], side="right", pad_id=7)
  assert right.tokens.shape == (2, len(a))
  np.testing.assert_array_equal(right.tokens[1, :len(b)], b.tokens)
  np.testing.assert_array_equal(right.tokens[1, len(b):], 7)
  np.testing.assert_array_equal(right.mask_ar[1, len(b):], 0)
  assert set(right.as_dict()) == {"tokens", "mask_ar", "loss_mask",
                                  "image_mask", "input_mask"}
  with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens, more than"):
    prompts.pad_batch([a, b], len(a) - 1)
  with pytest.raises(ValueError, match="side"):
    prompts.pad_batch([a], side="middle")
  with pytest.raises(ValueError, match="at least one"):
    prompts.pad_batch([])
