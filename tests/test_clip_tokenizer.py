"""The torch-free CLIP tokenizer gives open_clip's token ids, byte for byte, on a generated corpus."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from open_clip.tokenizer import SimpleTokenizer, default_bpe

from clipsam.engine.errors import ClipsamError
from clipsam.engine.text.tokenizer import ClipTokenizer, byte_symbols

CONTEXT = 77

# Text pieces that exercise the cleaning and splitting rules: punctuation runs, contractions (case-folded),
# HTML entities (unescaped twice), mojibake ftfy repairs, the special tokens, digits, combining marks,
# scripts without case or spaces, emoji with joiners, and every kind of whitespace run.
_PIECES = [
    "cat", "Stephen Curry", "a photo of a", "don't", "I'LL", "WE'VE", "it's", "'d", "&amp;", "&lt;b&gt;",
    "&amp;amp;", "café", "naïve", "Ã©", "â€™", "<start_of_text>", "<END_OF_TEXT>", "<end_of_text>x",
    "123", "3.14", "1,000", "Ⅻ", "½", "٣", "e\u0301", "\u0345", "ſ", "ﬁ", "İstanbul", "ß", "東京タワー",
    "한국어", "العربية", "Ελληνικά", "🚀", "👩\u200d💻", "🇫🇷", "!!!", "?!", "...", "—", "«»", "#tag",
    "@user", "http://x.y/z?q=1", "\u200b", "\ufeff", "\x00", "\x7f", " ", "  ", "\t", "\n", "\r\n",
    "\u00a0", "\u3000", "\u2028",
]  # fmt: skip
_pieces_text = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_mixed_text = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=6)), max_size=10).map("".join)
# Long texts: repeated words and runs of generated text, often past the 77-token context.
_long_text = st.one_of(
    st.builds(lambda word, count: f"{word} " * count, st.sampled_from(_PIECES), st.integers(30, 120)),
    st.text(min_size=60, max_size=400),
)
corpus_text = st.one_of(st.text(max_size=40), _pieces_text, _mixed_text, _long_text)


@pytest.fixture(scope="module")
def reference() -> SimpleTokenizer:
    return SimpleTokenizer(context_length=CONTEXT)


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer.from_file(default_bpe(), CONTEXT)


def _reference_ids(reference: SimpleTokenizer, texts: list[str]) -> np.ndarray:
    return reference(texts).numpy()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(corpus_text, min_size=1, max_size=4))
def test_token_ids_equal_open_clip(texts, tokenizer, reference):
    ours = tokenizer(texts)
    assert ours.dtype == np.int32 and ours.shape == (len(texts), CONTEXT)
    np.testing.assert_array_equal(ours, _reference_ids(reference, texts))


def test_fixed_corpus_equal_open_clip(tokenizer, reference):
    texts = [*_PIECES, "".join(_PIECES), " ".join(_PIECES), "", "   ", "a photo of a {}.".format("cat")]
    np.testing.assert_array_equal(tokenizer(texts), _reference_ids(reference, texts))


def test_truncation_keeps_eot_last(tokenizer, reference):
    long_text = "tree " * 200
    ids = tokenizer([long_text, "cat"])
    assert ids[0, -1] == tokenizer.end_id and ids[0, 0] == tokenizer.start_id
    assert (ids[0] == tokenizer.end_id).sum() == 1 and (ids[0] != 0).all()
    assert ids[1].argmax() == 2 and ids[1, 3:].max() == 0  # SOT, cat, EOT, zeros
    np.testing.assert_array_equal(ids, _reference_ids(reference, [long_text, "cat"]))


def test_vocabulary_matches_open_clip(tokenizer, reference):
    assert tokenizer.vocab_size == reference.vocab_size == 49408
    assert (tokenizer.start_id, tokenizer.end_id) == (reference.sot_token_id, reference.eot_token_id)
    assert list(byte_symbols().values()) == list(reference.byte_encoder.values())
    assert tokenizer.token_id == reference.encoder


def test_encode_without_special_tokens(tokenizer, reference):
    for text in ("Stephen Curry", "a, b; c!", "東京"):
        assert tokenizer.encode(text) == reference.encode(text)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "not readable"),
        (b"not gzip", "not readable"),
        (gzip.compress(b"#version\na b\n"), "48894 BPE merges"),
    ],
)
def test_bad_vocabulary_file_is_one_clipsam_error(tmp_path: Path, content, fragment):
    path = tmp_path / "bpe.txt.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ClipsamError, match=fragment):
        ClipTokenizer.from_file(path)


def test_tokenizer_imports_without_torch():
    code = (
        "import sys\n"
        "for name in ('torch', 'open_clip', 'torchvision', 'sam2'):\n"
        "    sys.modules[name] = None\n"
        "from clipsam.engine.text.tokenizer import ClipTokenizer\n"
        "from clipsam.engine.text.encoder import GraphTextEncoder, text_encoder_from_manifest\n"
        f"ids = ClipTokenizer.from_file({str(default_bpe())!r})(['a photo of a cat.'])\n"
        "assert ids.shape == (1, 77) and 'torch' not in [m for m in sys.modules if sys.modules[m]]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
