# ruff: noqa: RUF001 - Chinese text uses fullwidth punctuation
"""The encoder API beyond OpenAI's embeddings: token-id inputs, /v1/rerank, /tokenize,
/detokenize, GET /v1/models/{id}, the unknown-field rule and readable 400s; Chinese text."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.support.procs import Proc

ZH = "今天天气很好，我们去公园散步吧。"
ZH_DOCS = ["猫在沙发上睡觉", "股市今天大幅下跌", {"text": "那只猫正在沙发上打盹"}]
# Pydantic's internal type names: a message naming one is talking to us, not to the user.
INTERNAL = ("constrained-str", "list[", "function-after", "function-wrap", "tagged-union",
            "Extra inputs are not permitted", "Value error,")  # fmt: skip


@pytest.fixture(scope="module")
def client(embedding_proc: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{embedding_proc.url}/v1", api_key="unused", max_retries=0)


def post(proc: Proc, path: str, body: Any) -> httpx.Response:
    return httpx.post(proc.url + path, json=body, timeout=30)


def test_token_ids_embed_like_the_text_they_tokenize_to(
    embedding_proc: Proc, client: openai.OpenAI
) -> None:
    ids = post(embedding_proc, "/tokenize", {"prompt": ZH}).json()["tokens"]
    text = client.embeddings.create(model="m", input=ZH)
    one = client.embeddings.create(model="m", input=ids)  # [int]: one input
    two = client.embeddings.create(model="m", input=[ids, ids[:3]])  # [[int]]: two inputs
    assert len(one.data) == 1 and len(two.data) == 2
    np.testing.assert_allclose(one.data[0].embedding, text.data[0].embedding, atol=1e-5)
    np.testing.assert_allclose(two.data[0].embedding, text.data[0].embedding, atol=1e-5)
    assert one.usage.prompt_tokens == text.usage.prompt_tokens == len(ids)
    assert two.usage.prompt_tokens == len(ids) + 3


def test_overlong_token_ids_are_truncated_and_flagged(embedding_proc: Proc) -> None:
    tok = post(embedding_proc, "/tokenize", {"prompt": "word " * 400}).json()
    assert tok["count"] > tok["max_model_len"]
    by_ids = post(embedding_proc, "/v1/embeddings", {"input": tok["tokens"]}).json()
    by_text = post(embedding_proc, "/v1/embeddings", {"input": "word " * 400}).json()
    assert by_ids["data"][0]["truncated"] is True
    assert by_ids["usage"]["prompt_tokens"] == tok["max_model_len"]
    np.testing.assert_allclose(by_ids["data"][0]["embedding"], by_text["data"][0]["embedding"],
                               atol=1e-5)  # fmt: skip


BAD_IDS = [
    ({"input": [1, 2, 10**9]}, 400, "vocabulary"),
    ({"input": [[1, 2], []]}, 400, "empty token-id array"),
    ({"input": [[1, -2]]}, 400, "integers >= 0"),
    ({"input": [[1, 2], "text"]}, 400, "mixes kinds"),
    ({"input": [1.5, 2]}, 400, "token ids"),
    ({"input": {"text": "x"}}, 400, "array of token ids"),
    ({"input": [[101, 102]] * 65}, 400, "too many inputs"),
]


@pytest.mark.parametrize(("body", "status", "words"), BAD_IDS)
def test_bad_token_id_input_is_a_fast_4xx_in_the_user_s_terms(
    embedding_proc: Proc, body: Any, status: int, words: str
) -> None:
    t0 = time.perf_counter()
    err = assert_openai_error(post(embedding_proc, "/v1/embeddings", body), status)
    assert time.perf_counter() - t0 < 1.0
    assert words in str(err["message"]) and err["param"] == "input"
    assert not any(name in str(err["message"]) for name in INTERNAL), err


def test_token_id_arrays_count_against_the_character_limit(embedding_proc: Proc) -> None:
    err = assert_openai_error(post(embedding_proc, "/v1/embeddings", {"input": [1] * 100_001}),
                              413)  # fmt: skip
    assert "token ids" in str(err["message"])


VALIDATION = [
    ("/v1/embeddings", {"input": 42}),
    ("/v1/embeddings", {"input": ["ok", 3]}),
    ("/v1/similarity", {"query": 1, "documents": ["a"]}),
    ("/v1/rerank", {"query": "q", "documents": [{"txt": "a"}]}),
    ("/v1/rerank", {"query": "q", "documents": "a"}),
    ("/tokenize", {"prompt": ["a"]}),
    ("/detokenize", {"tokens": ["a"]}),
]


@pytest.mark.parametrize(("path", "body"), VALIDATION)
def test_validation_errors_never_name_pydantic_types(embedding_proc: Proc, path: str,
                                                     body: Any) -> None:  # fmt: skip
    err = assert_openai_error(post(embedding_proc, path, body), 400)
    assert err["type"] == "invalid_request_error" and err["param"]
    assert not any(name in str(err["message"]) for name in INTERNAL), err


UNKNOWN_FIELD = [
    ("/v1/embeddings", {"input": "x", "truncate": True}),
    ("/v1/similarity", {"query": "q", "documents": ["a"], "truncate": True}),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "truncate": True}),
    ("/tokenize", {"prompt": "x", "truncate": True}),
    ("/detokenize", {"tokens": [101], "truncate": True}),
]


@pytest.mark.parametrize(("path", "body"), UNKNOWN_FIELD)
def test_an_unknown_field_is_a_400_naming_it_on_every_route(embedding_proc: Proc, path: str,
                                                            body: Any) -> None:  # fmt: skip
    err = assert_openai_error(post(embedding_proc, path, body), 400)
    assert err["message"] == "unsupported parameter(s): truncate"
    assert err["code"] == "unsupported_parameter" and err["param"] == "truncate"


def test_rerank_ranks_chinese_documents_like_similarity(embedding_proc: Proc) -> None:
    body = {"query": "猫在哪里睡觉？", "documents": ZH_DOCS, "return_documents": True}
    res = post(embedding_proc, "/v1/rerank", body)
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    out = res.json()
    texts = [d if isinstance(d, str) else d["text"] for d in ZH_DOCS]
    sim = post(embedding_proc, "/v1/similarity", {"query": body["query"], "documents": texts})
    assert [r["index"] for r in out["results"]] == [d["index"] for d in sim.json()["data"]]
    for r, s in zip(out["results"], sim.json()["data"], strict=True):
        assert r["relevance_score"] == pytest.approx(s["score"], abs=1e-5)
        assert r["document"] == {"text": texts[r["index"]]}  # UTF-8 back unchanged
    assert out["usage"]["prompt_tokens"] == sim.json()["usage"]["prompt_tokens"] > 0
    assert out["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    top = post(embedding_proc, "/v1/rerank", {**body, "top_n": 1, "return_documents": False})
    assert top.json()["results"] == [
        {
            "index": out["results"][0]["index"],
            "relevance_score": out["results"][0]["relevance_score"],
        }
    ]


def test_rerank_limits_are_fast_400s(embedding_proc: Proc) -> None:
    for body, param in [
        ({"query": "q", "documents": ["a"] * 257}, "documents"),  # MAX_RERANK_DOCUMENTS=256
        ({"query": "q", "documents": ["a"], "top_n": 257}, "top_n"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "", "documents": ["a"]}, "query"),
        ({"query": "q", "documents": []}, "documents"),
    ]:
        t0 = time.perf_counter()
        err = assert_openai_error(post(embedding_proc, "/v1/rerank", body), 400)
        assert time.perf_counter() - t0 < 1.0 and err["param"] == param, err


def test_input_type_without_configured_prefixes_changes_nothing(embedding_proc: Proc) -> None:
    plain = post(embedding_proc, "/v1/embeddings", {"input": ZH}).json()
    for kind in ("query", "document", "passage", "search_query"):
        typed = post(embedding_proc, "/v1/embeddings", {"input": ZH, "input_type": kind}).json()
        assert typed["data"][0]["embedding"] == plain["data"][0]["embedding"]
    err = assert_openai_error(
        post(embedding_proc, "/v1/embeddings", {"input": ZH, "input_type": "question"}), 400
    )
    assert err["param"] == "input_type"


def test_tokenize_and_detokenize_chinese(embedding_proc: Proc) -> None:
    text = "中文，世"
    tok = post(embedding_proc, "/tokenize", {"prompt": text}).json()
    assert tok["count"] == len(tok["tokens"]) and tok["max_model_len"] == 256
    bare = post(embedding_proc, "/tokenize", {"prompt": text, "add_special_tokens": False}).json()
    assert tok["tokens"][1:-1] == bare["tokens"]  # [CLS] ... [SEP]
    back = post(embedding_proc, "/detokenize", {"tokens": bare["tokens"]}).json()["prompt"]
    assert back.replace(" ", "") == text  # MiniLM's WordPiece knows these characters
    assert_openai_error(post(embedding_proc, "/detokenize", {"tokens": [10**7]}), 400)
    err = assert_openai_error(post(embedding_proc, "/tokenize", {"prompt": "x", "model": "no"}),
                              404)  # fmt: skip
    assert err["code"] == "model_not_found"
    assert_openai_error(post(embedding_proc, "/tokenize", {}), 400)
    # An encoder has no chat template: messages are refused in words.
    err = assert_openai_error(
        post(embedding_proc, "/tokenize", {"messages": [{"role": "user", "content": "你好"}]}), 400
    )
    assert "chat template" in str(err["message"])


def test_openai_client_retrieves_a_model_and_gets_404_for_an_unknown_one(
    client: openai.OpenAI,
) -> None:
    model = client.models.retrieve("sentence-transformers/all-MiniLM-L6-v2")
    assert model.id == "sentence-transformers/all-MiniLM-L6-v2" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert exc.value.code == "model_not_found"
