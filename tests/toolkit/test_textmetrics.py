"""textmetrics: ROUGE and BLEU agree with rouge-score and sacrebleu called directly, in English
and Chinese; embedding similarity ranks a paraphrase above an unrelated text (packaged MiniLM)."""

from __future__ import annotations

import logging
import math

import jieba
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from modelfleet_toolkit.textmetrics import (
    detect_lang,
    generation_metrics,
    semantic_similarity,
)

EN_PREDS = [
    "The council approved the new budget on Tuesday after a long debate.",
    "Heavy rain caused flooding in several towns along the river.",
    "The company reported higher profits thanks to strong phone sales.",
]
EN_REFS = [
    "After a lengthy debate, the council passed the new budget on Tuesday.",
    "Several riverside towns were flooded after heavy rain.",
    "Strong sales of phones lifted the company's profits.",
]
ZH_PREDS = [
    "今天天气很好，我们去公园散步。",  # noqa: RUF001
    "模型在测试集上的准确率达到了百分之九十。",
    "公司今年的利润增长了百分之二十。",
]
ZH_REFS = [
    "今天天气不错，我们去公园走走吧。",  # noqa: RUF001
    "这个模型在测试集上的准确率是百分之九十五。",
    "今年公司利润增加了两成。",
]


def _mean_f(
    scorer: rouge_scorer.RougeScorer, preds: list[str], refs: list[str]
) -> dict[str, float]:
    out = dict.fromkeys(("rouge1", "rouge2", "rougeL"), 0.0)
    for p, r in zip(preds, refs, strict=True):
        for key, score in scorer.score(r, p).items():
            out[key] += score.fmeasure / len(preds)
    return out


def test_english_matches_rouge_score_and_sacrebleu() -> None:
    got = generation_metrics(EN_PREDS, EN_REFS)
    assert got["lang"] == "en" and got["n"] == 3
    want = _mean_f(
        rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True),
        EN_PREDS,
        EN_REFS,
    )
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(EN_PREDS, [EN_REFS]).score, abs=1e-9)
    assert 0 < got["rouge2"] < got["rouge1"] < 1


def test_chinese_matches_the_libraries_on_jieba_words() -> None:
    """rouge-score's own tokenizer drops CJK, so the reference run spells each jieba word as an
    ASCII id and lets the library's default path score those; BLEU is sacrebleu's zh."""
    got = generation_metrics(ZH_PREDS, ZH_REFS)
    assert got["lang"] == "zh"
    jieba.setLogLevel(logging.WARNING)
    ids: dict[str, str] = {}

    def spell(text: str) -> str:
        words = [w for w in jieba.lcut(text) if w.strip() and w not in "，。"]  # noqa: RUF001
        return " ".join(ids.setdefault(w, f"w{len(ids)}") for w in words)

    want = _mean_f(
        rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]),
        [spell(t) for t in ZH_PREDS],
        [spell(t) for t in ZH_REFS],
    )
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    bleu = sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score
    assert got["bleu"] == pytest.approx(bleu, abs=1e-9)
    # the English setup would see no words at all in these texts
    assert generation_metrics(ZH_PREDS, ZH_REFS, lang="en")["rouge1"] == 0.0


def test_hand_checkable_scores() -> None:
    # 5 of 6 unigrams shared ("the" counts once in the reference): P = R = F = 5/6
    got = generation_metrics(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert got["rouge1"] == pytest.approx(5 / 6)
    # bigrams: the cat, cat sat, sat on shared of 5 each: 3/5
    assert got["rouge2"] == pytest.approx(3 / 5)
    # 我/爱/北京 vs 我/爱/上海: two of three words
    zh = generation_metrics(["我爱北京"], ["我爱上海"])
    assert zh["rouge1"] == pytest.approx(2 / 3) and zh["rougeL"] == pytest.approx(2 / 3)
    # every character of the hypothesis matches (precisions 100%); only the brevity penalty
    # exp(1 - 7/6) remains
    zh_bleu = generation_metrics(["猫坐在垫子上"], ["猫坐在垫子上了"])["bleu"]
    assert zh_bleu == pytest.approx(100 * math.exp(1 - 7 / 6), abs=1e-6)
    same = generation_metrics(
        ["a perfect copy of the reference"], ["a perfect copy of the reference"]
    )
    assert same["bleu"] == pytest.approx(100) and same["rougeL"] == pytest.approx(1)


def test_several_references_take_the_best_rouge() -> None:
    one = generation_metrics(["the cat sat on the mat"], ["a dog barked"])
    two = generation_metrics(
        ["the cat sat on the mat"], [["a dog barked", "the cat sat on the mat"]]
    )
    assert one["rouge1"] < 0.2 and two["rouge1"] == pytest.approx(1)
    assert two["bleu"] == pytest.approx(100)


def test_detect_lang_and_bad_input() -> None:
    assert detect_lang(["hello", "你好"]) == "zh"
    assert detect_lang(["hello", "café"]) == "en"
    with pytest.raises(ValueError, match="pair up"):
        generation_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        generation_metrics([], [])
    with pytest.raises(TypeError):
        generation_metrics("abc", "abc")


def test_other_languages_keep_their_letters() -> None:
    got = generation_metrics(["Der Bär schläft im Wald"], ["Der Bär schläft"], lang="de")
    # 3 shared words of 5 and 3: P = 3/5, R = 1, F = 0.75 (rouge-score's English tokenizer
    # would split "bär" into "b" and "r")
    assert got["rouge1"] == pytest.approx(0.75)


def test_semantic_similarity_ranks_a_paraphrase_above_an_unrelated_text() -> None:
    sims = semantic_similarity(
        ["The meeting was moved to Friday.", "The meeting was moved to Friday.", "我喜欢喝咖啡。"],
        [
            "They rescheduled the meeting for Friday.",
            "Penguins live in the southern hemisphere.",
            "我爱喝咖啡。",
        ],
    )
    assert sims[0] > 0.7 > 0.2 > sims[1]
    assert sims[2] > 0.7
