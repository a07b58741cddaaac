# ruff: noqa: RUF001 - Chinese text uses fullwidth punctuation
"""The encoder routes, /tokenize, /detokenize and GET routes through a real gateway in front of
real embedding, classification and llm services (and a real Redis for the cache)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import assert_openai_error
from tests.gateway.conftest import gateway
from tests.support.fleet import wait_pools_healthy
from tests.support.procs import Proc

EMBEDDING_ID = "sentence-transformers/all-MiniLM-L6-v2"
LLM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def gw(
    embedding_proc: Proc, classification_proc: Proc, llm_proc: Proc, redis_proc: Proc
) -> Iterator[Proc]:
    pools = {"embedding": embedding_proc.url, "classification": classification_proc.url,
             "llm": llm_proc.url}  # fmt: skip
    with gateway(pools, redis_proc) as proc:
        wait_pools_healthy(proc, list(pools))
        yield proc


@pytest.fixture(scope="module")
def client(gw: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)


def post(gw: Proc, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, json=body, headers=headers, timeout=60)


def test_rerank_through_the_gateway_is_cached_per_answer(gw: Proc) -> None:
    body = {"query": "猫在哪里？", "documents": ["猫在沙发上", "股市下跌", {"text": "狗在院子里"}]}
    first = post(gw, "/v1/rerank", body)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    again = post(gw, "/v1/rerank", body)
    assert again.headers["x-cache"] == "hit" and again.json() == first.json()
    # Every field that changes the answer is in the key.
    for change in ({"top_n": 1}, {"return_documents": True}, {"query": "狗在哪里？"}):
        other = post(gw, "/v1/rerank", {**body, **change})
        assert other.headers["x-cache"] == "miss", change
    shown = post(gw, "/v1/rerank", {**body, "return_documents": True}).json()
    texts = {r["document"]["text"] for r in shown["results"]}
    assert texts == {"猫在沙发上", "股市下跌", "狗在院子里"}


def test_input_type_is_part_of_the_embeddings_cache_key(gw: Proc) -> None:
    body = {"input": "缓存键测试"}
    assert post(gw, "/v1/embeddings", body).headers["x-cache"] in ("miss", "hit")
    assert post(gw, "/v1/embeddings", body).headers["x-cache"] == "hit"
    typed = post(gw, "/v1/embeddings", {**body, "input_type": "query"})
    assert typed.status_code == 200 and typed.headers["x-cache"] == "miss"


def test_openai_client_embeds_token_ids_through_the_gateway(gw: Proc, client: openai.OpenAI
                                                            ) -> None:  # fmt: skip
    ids = post(gw, "/tokenize", {"model": EMBEDDING_ID, "prompt": "中文，世"}).json()["tokens"]
    by_ids = client.embeddings.create(model=EMBEDDING_ID, input=[ids])
    by_text = client.embeddings.create(model=EMBEDDING_ID, input="中文，世")
    assert by_ids.data[0].embedding == pytest.approx(by_text.data[0].embedding, abs=1e-5)
    assert by_ids.usage.prompt_tokens == len(ids)


def test_tokenize_goes_to_the_pool_serving_the_model(gw: Proc) -> None:
    text = "你好，世界！"
    llm = post(gw, "/tokenize", {"model": LLM_ID, "prompt": text}).json()
    enc = post(gw, "/tokenize", {"model": EMBEDDING_ID, "prompt": text}).json()
    default = post(gw, "/tokenize", {"prompt": text}).json()  # no model: the llm pool
    assert llm == default and llm["tokens"] != enc["tokens"]
    assert llm["max_model_len"] == 1024 and enc["max_model_len"] == 256
    back = post(gw, "/detokenize", {"model": LLM_ID, "tokens": llm["tokens"]}).json()
    assert back == {"prompt": text}  # byte-level BPE: the exact UTF-8 text back
    err = assert_openai_error(post(gw, "/tokenize", {"model": "no-such", "prompt": "x"}), 404)
    assert err["code"] == "model_not_found"
    err = assert_openai_error(post(gw, "/tokenize", {"prompt": "x", "truncate": 1}), 400)
    assert err["code"] == "unsupported_parameter"


def test_models_retrieve_and_get_routes_through_the_gateway(gw: Proc, client: openai.OpenAI
                                                            ) -> None:  # fmt: skip
    for model_id in (EMBEDDING_ID, LLM_ID):
        assert client.models.retrieve(model_id).id == model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    tasks = httpx.get(gw.url + "/v1/classify/tasks", timeout=30)
    assert tasks.status_code == 200
    assert {t["task"] for t in tasks.json()["data"]} >= {"sentiment", "intent"}


def test_classification_with_chinese_custom_labels(gw: Proc) -> None:
    labels = ["体育", "财经", "天气"]
    body = {"input": ["这场足球比赛非常精彩", "明天会下大雨"], "labels": labels}
    res = post(gw, "/v1/classify", body)
    assert res.status_code == 200, res.text
    out = res.json()
    for item in out["data"]:
        assert sorted(x["label"] for x in item["labels"]) == sorted(labels)  # UTF-8 unchanged
        assert sum(x["score"] for x in item["labels"]) == pytest.approx(1.0, abs=1e-4)
    assert out["usage"]["prompt_tokens"] > 0
    described = {"正面": "好消息", "负面": "坏消息"}
    mapped = post(gw, "/v1/classify", {"input": "股票上涨", "labels": described})
    assert {x["label"] for x in mapped.json()["data"][0]["labels"]} == {"正面", "负面"}
    err = assert_openai_error(post(gw, "/v1/classify", {"input": "x", "lables": labels}), 400)
    assert err["message"] == "unsupported parameter(s): lables"


INTERNAL = ("constrained-str", "list[", "function-after", "Extra inputs", "Value error,")


@pytest.mark.parametrize("value", [5, ["ok", 3], [["a"]], {"text": "x"}])
def test_union_fields_fail_in_the_user_s_terms_at_gateway_and_service(
    gw: Proc, classification_proc: Proc, value: Any
) -> None:
    for base in (gw.url, classification_proc.url):
        r = httpx.post(base + "/v1/classify", json={"input": value}, timeout=30)
        err = assert_openai_error(r, 400)
        assert str(err["param"]).startswith("input"), err
        assert not any(name in str(err["message"]) for name in INTERNAL), err
