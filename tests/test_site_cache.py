"""A site's disk cache: rows, tokenized splits and a converted base model, built once and named by content.

In a deployment each message runs in a fresh process; these tests play "a fresh process" by dropping what this
process remembers and check that the second one reads back exactly what the first built, memory-mapped, and that
changing an input (file bytes, label set, dtype) misses instead of hitting something stale.
"""

from __future__ import annotations

import torch
import pytest

from fedmedlora.data.site_cache import SiteCache, own_site_key, pool_site_key
from fedmedlora.data.sites import load_sites
from fedmedlora.federation import node_site as node_site_module
from fedmedlora.federation.node_site import client_job, load_node_site, node_site
from fedmedlora.job import Job
from fedmedlora.local_cache import published
from fedmedlora.model import base_cache, resident
from fedmedlora.settings import parse_run_config

from helpers import TINY_NER


def _forget_process_memory() -> None:
    """What a new ClientApp process starts without."""
    node_site_module.forget_sites()
    resident.forget_resident_model()


@pytest.fixture
def site_file(tmp_path):
    path = tmp_path / "clinic.tsv"
    sentences = ["Aspirin\tB-Chemical\ncaused\tO\nasthma\tB-Disease\n", "No\tO\nfindings\tO\n",
                 "Cisplatin\tB-Chemical\nnephrotoxicity\tB-Disease\n"] * 10
    path.write_text("\n".join(sentences))
    return path


def test_a_second_process_reads_the_rows_and_tokenized_split_back(site_file, tmp_path):
    settings = parse_run_config(TINY_NER)
    node = node_site({"data-path": str(site_file), "cache-dir": str(tmp_path / "cache")}, settings)
    _forget_process_memory()
    first, origin = load_node_site(node, settings)
    assert origin == "read"
    tokenized = client_job(settings, node, ["Chemical", "Disease"]).tokenized(-1, "train")
    _forget_process_memory()
    again, origin = load_node_site(node, settings)
    assert origin == "disk cache"
    assert (again.train, again.val, again.test, again.name) == (first.train, first.val, first.test, first.name)
    reread = client_job(settings, node, ["Chemical", "Disease"]).tokenized(-1, "train")
    assert reread.cache_files and all(f["filename"].startswith(str(tmp_path / "cache")) for f in reread.cache_files)
    assert reread[:] == tokenized[:]
    fresh = Job(settings, sites=[again], vocabulary=["Chemical", "Disease"]).tokenized(-1, "train")
    assert reread[:] == fresh[:]  # the same as tokenizing without any cache
    entries = lambda: sorted(p.name for p in (tmp_path / "cache" / "tokenized").iterdir() if p.is_dir())  # noqa
    before = entries()
    client_job(settings, node, ["Chemical", "Disease", "Gene"]).tokenized(-1, "train")
    assert len(entries()) == len(before) + 1  # another label set: another entry


def test_changed_file_bytes_make_a_new_entry(site_file):
    settings = parse_run_config(TINY_NER)
    before = own_site_key(settings, [site_file], "clinic")
    site_file.write_text(site_file.read_text().replace("asthma", "eczema"))
    assert own_site_key(settings, [site_file], "clinic") != before
    assert own_site_key(parse_run_config({**TINY_NER, "run.seed": 1}), [site_file], "clinic") != before


@pytest.mark.parametrize("config", [TINY_NER, {"data.task": "re", "data.datasets": "chemprot",
                                               "data.max-train-examples": 40, "data.max-eval-examples": 10}])
def test_pool_partitions_survive_the_round_trip_exactly(config, tmp_path):
    settings = parse_run_config(config)
    sites = load_sites(settings)
    cache = SiteCache(tmp_path)
    built, hit = cache.site(pool_site_key(settings, 1), lambda: sites[1])
    assert not hit
    back, hit = cache.site(pool_site_key(settings, 1), lambda: pytest.fail("rebuilt despite the cache"))
    assert hit and back.site_id == 1
    assert (back.train, back.val, back.test, back.sources) == (sites[1].train, sites[1].val, sites[1].test,
                                                              sites[1].sources)


def test_a_writer_that_fails_leaves_no_entry(tmp_path):
    def broken(folder):
        (folder / "part").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        published(tmp_path / "entry", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]


def test_a_converted_base_model_is_saved_once_and_read_back(tmp_path):
    """tiny-llama-micro is stored in float32; asking for bfloat16 converts it, so the cache keeps the bf16 copy."""
    config = {"model.name": "builtin:tiny-llama-micro", "model.dtype": "bfloat16", "lora.target-modules": "q_proj"}
    settings = parse_run_config(config)
    hits = base_cache.cache_hits()
    resident.forget_resident_model()
    first = resident.resident_model(settings, "", [], cache_dir=tmp_path).model
    weights = {k: v.clone() for k, v in first.state_dict().items()}
    assert base_cache.cache_hits() == hits and len(list((tmp_path / "models").iterdir())) == 2  # entry + lock
    resident.forget_resident_model()
    again = resident.resident_model(settings, "", [], cache_dir=tmp_path).model
    assert base_cache.cache_hits() == hits + 1
    for key, value in again.state_dict().items():
        if "lora_" not in key:  # the adapter is drawn afresh; the base must be the same bf16 weights
            assert value.dtype == weights[key].dtype and torch.equal(value, weights[key]), key
    resident.forget_resident_model()
    as_stored = {**config, "model.dtype": "float32"}
    resident.resident_model(parse_run_config(as_stored), "", [], cache_dir=tmp_path / "f32")
    assert not (tmp_path / "f32").exists()  # loaded as stored: nothing to convert, nothing copied
    resident.forget_resident_model()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU 4-bit path (bitsandbytes' CPU backend)")
def test_a_4bit_base_is_quantized_once_and_read_back_trainable(tmp_path):
    """model.quantization = 4: the first load quantizes to NF4 and saves the packed weights; a new process reads them
    back without quantizing, identical, and LoRA on top still gets gradients."""
    settings = parse_run_config({"model.name": "builtin:tiny-llama-micro", "model.quantization": 4,
                                 "lora.target-modules": "q_proj,v_proj"})
    hits = base_cache.cache_hits()
    resident.forget_resident_model()
    first = resident.resident_model(settings, "", [], cache_dir=tmp_path).model
    packed = {k: v.clone() for k, v in first.state_dict().items() if "lora_" not in k}
    assert any(v.dtype == torch.uint8 for v in packed.values())  # NF4, two weights a byte
    resident.forget_resident_model()
    again = resident.resident_model(settings, "", [], cache_dir=tmp_path).model
    assert base_cache.cache_hits() == hits + 1
    for key, value in again.state_dict().items():
        if "lora_" not in key:
            assert value.dtype == packed[key].dtype and torch.equal(value, packed[key]), key
    ids = torch.randint(0, 100, (2, 12))
    again(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in again.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    resident.forget_resident_model()
