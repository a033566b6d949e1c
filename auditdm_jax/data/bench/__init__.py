"""The paper's 16 real benchmarks: released formats -> one schema -> TFDS.

  from auditdm_jax.data import bench
  src = bench.make_source("vlmeval_tsv", path="/data/MMBench_DEV_EN_V11.tsv")
  bench.build("mmbench_v11", "dev", src, "/data/tfds")
  exs = bench.load_examples("/data/tfds", "mmbench_v11", "dev")
  ds = bench.bench_source("/data/tfds", "mmbench_v11", "dev")  # grain

  python -m auditdm_jax.data.bench --data_dir DIR --benchmark vqav2 \
      --split val --format vqa_json --source '{"questions": "...",
      "annotations": "...", "image_dir": "/coco/val2014"}'

Modules:
  schema    BenchExample (the common schema), BENCHMARKS (16 BenchmarkSpec:
            task, metric, grouping), BenchDataError
  formats   readers of the released formats (FORMATS registry: vlmeval_tsv,
            parquet, vqa_json, gqa_json, coco_captions, refcoco, docvqa_json,
            chartqa_json)
  builder   the `real_bench` TFDS builder (array_record, no TensorFlow), one
            config per (benchmark, split); build / bench_source /
            load_examples
  images    image bytes: base64, validation, PNG/JPEG kept as released

Scoring lives in `auditdm_jax.eval.scorers` (registry by metric name; every
BenchmarkSpec names its metric there).
"""

from auditdm_jax.data.bench.builder import bench_source
from auditdm_jax.data.bench.builder import build
from auditdm_jax.data.bench.builder import data_source
from auditdm_jax.data.bench.builder import dataset_dir
from auditdm_jax.data.bench.builder import decode_record
from auditdm_jax.data.bench.builder import load_examples
from auditdm_jax.data.bench.builder import metadata
from auditdm_jax.data.bench.builder import RealBench
from auditdm_jax.data.bench.formats import FORMATS
from auditdm_jax.data.bench.formats import make_source
from auditdm_jax.data.bench.formats import Source
from auditdm_jax.data.bench.schema import BENCHMARKS
from auditdm_jax.data.bench.schema import BenchDataError
from auditdm_jax.data.bench.schema import BenchExample
from auditdm_jax.data.bench.schema import BenchmarkSpec
from auditdm_jax.data.bench.schema import get_benchmark
